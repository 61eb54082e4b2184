"""The network as an ONNX graph (torch.onnx's TorchScript exporter) or TorchScript, and the ONNX cache.

Backends that run ONNX get their graph from `onnx_graph`: exported on the fly from the loaded
model, kept under `<cache>/onnx/` (next to `<cache>/checkpoints/`, `$AEPOSE_HOME` or
`~/.cache/aepose`) under a name that holds the checkpoint's sha256, the network's family and
outputs, the torch version (the exporter) and the opset, written atomically through the cache's
own `FileScope`.

The cache verifies what it serves: beside each graph, written when it is made, a record
(`NAME.onnx.digest`) holds the graph's sha256 and the checkpoint's; a graph is served only when
its bytes hash to that digest (the very bytes then handed to the runtime: nothing is read twice),
and the backend checks its inputs and outputs against the network (`check_graph_io`). A damaged,
truncated or swapped entry is exported again over itself, with one note saying so; a cache that
cannot be written (read-only, full, `AEPOSE_HOME` a file) costs an export held in memory for this
run, with one note.

The graph's outputs are the head's raw outputs, as the reference's head returns them
(`AENet.raw_outputs`), named by `output_names`: `maps` for a one-output head (HRNet, ResNet,
MobileNetV2: K heatmaps then K tags at 1/4), `maps_stride4` and `heatmaps_stride2` for
HigherHRNet, `maps_stage0` .. `maps_stage3` for Hourglass-AE's four stacks.
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import BackendError

DEFAULT_OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "maps"
# Bump when the export settings below change, so that old cached graphs are not reused.
# 2: every raw output of the head, named by `output_names`.
_EXPORT_REVISION = "2"
# The traced input: any size works (the graph has no shape-dependent Python), small is quick.
_TRACE_HW = (256, 256)


def _first_line(exc: BaseException) -> str:
    """The exporter's first line, without its standing invitation to file an issue."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line.split(". Please feel free")[0][:200]


def output_names(spec) -> list[str]:
    """The exported graph's output names for an `AENetSpec`, one per raw head output: what it
    holds (`maps`: K heatmaps then K tags; `heatmaps`; `tags`), then, for several outputs, their
    stride (HigherHRNet's resolutions) or their stage (Hourglass-AE's stacks, 0 first)."""
    outputs = spec.outputs
    kinds = [OUTPUT_NAME if o.heatmaps and o.tags else ("heatmaps" if o.heatmaps else "tags") for o in outputs]
    if len(outputs) == 1:
        return [kinds[0]]
    if len({o.stride for o in outputs}) == len(outputs):
        return [f"{kind}_stride{o.stride}" for kind, o in zip(kinds, outputs)]
    return [f"{kind}_stage{i}" for i, kind in enumerate(kinds)]


class _HeadOutputs(torch.nn.Module):
    """What an exported file computes: the network's raw outputs (a tuple; one tensor alone)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        outputs = self.net.raw_outputs(x)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def export_onnx(
    model: torch.nn.Module,
    target: str | Path | io.BytesIO,
    *,
    opset: int = DEFAULT_OPSET,
    static_hw: tuple[int, int] | None = None,
) -> None:
    """Write the `AENet` `model` as ONNX: input `image` `[N, 3, H, W]`, the head's raw outputs
    named by `output_names` (a one-output head: `maps` `[N, 2K, H/4, W/4]`).

    Batch, height and width are dynamic unless `static_hw` fixes the input to `[1, 3, H, W]`.
    Raises BackendError with the exporter's first line when torch.onnx cannot export it. The
    exporter writes into memory; a path `target` is then written atomically (`io.filesystem`).
    """
    if not isinstance(target, io.BytesIO):
        from ..io.filesystem import FileScope

        buffer = io.BytesIO()
        export_onnx(model, buffer, opset=opset, static_hw=static_hw)
        FileScope.of(target, name="ONNX export").store_bytes(target, buffer.getbuffer())
        return
    h, w = static_hw if static_hw is not None else _TRACE_HW
    param = next(model.parameters())
    dummy = torch.zeros(1, 3, h, w, dtype=param.dtype, device=param.device)
    names = output_names(model.spec)
    dynamic_axes = None
    if static_hw is None:
        dynamic_axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
        for name, out in zip(names, model.spec.outputs):
            dynamic_axes[name] = {0: "batch", 2: f"height_div{out.stride}", 3: f"width_div{out.stride}"}
    was_training = model.training
    model.eval()
    # `dynamo=False` picks the TorchScript exporter where torch has both (2.5+); older torch has
    # only that one and no such keyword.
    exporter_choice = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    try:
        with warnings.catch_warnings(), torch.no_grad(), _exporter_log_silenced():
            warnings.simplefilter("ignore")
            graph = io.BytesIO()  # torch writes into memory; the bytes go to `target` below
            torch.onnx.export(
                _HeadOutputs(model),
                (dummy,),
                graph,
                export_params=True,
                opset_version=opset,
                do_constant_folding=True,
                input_names=[INPUT_NAME],
                output_names=names,
                dynamic_axes=dynamic_axes,
                **exporter_choice,
            )
    except OSError:
        raise  # the file cannot be written (a full disk): an output's failure, not the exporter's
    except Exception as exc:  # the exporter raises many types (OnnxExporterError, RuntimeError...)
        raise BackendError(f"cannot export the network to ONNX (opset {opset}): {_first_line(exc)}") from None
    finally:
        model.train(was_training)
    target.write(graph.getbuffer())


@contextlib.contextmanager
def _exporter_log_silenced() -> Iterator[None]:
    """Keep torch.onnx's C++ log off during an export, and its log switch as it was, without
    touching the process's file descriptors.

    torch 2.x's TorchScript exporter turns its ONNX log on for every export: its
    `setup_onnx_logging` tests the function `torch._C._jit_is_onnx_log_enabled` instead of
    calling it, and a function is always true. On a failure it then writes the whole TorchScript
    graph (~0.8 MB) to C++'s std::cout. The exporter reads that name from `torch._C` when the
    export starts, so for the export's duration the name is a stand-in that answers as the
    function does when called but is false when tested: the exporter leaves the log off, and
    nothing reaches stdout. The name and the log switch are restored afterwards. (An earlier
    version pointed descriptors 1 and 2 at a temporary file for the 10-60 s of the export,
    hiding every other thread's output meanwhile.)
    """
    module = torch._C
    is_enabled = module._jit_is_onnx_log_enabled
    log_was_on = is_enabled()
    module._jit_is_onnx_log_enabled = _FalseWhenTested(is_enabled)
    try:
        yield
    finally:
        module._jit_is_onnx_log_enabled = is_enabled
        torch._C._jit_set_onnx_log_enabled(log_was_on)


class _FalseWhenTested:
    """A function's stand-in: called, it is the function; tested for truth, it is false."""

    def __init__(self, function) -> None:
        self.function = function

    def __call__(self, *args, **kwargs):
        return self.function(*args, **kwargs)

    def __bool__(self) -> bool:
        return False


def export_torchscript(model: torch.nn.Module, target: io.BytesIO, *, static_hw: tuple[int, int] | None = None) -> None:
    """Trace the `AENet` `model` to TorchScript (any input size: the network has no
    shape-dependent Python) into the buffer `target` (the caller's file scope writes it: torch's
    own file writer aborts the process on a full disk); it returns the head's raw outputs (a
    tuple; one tensor alone)."""
    h, w = static_hw if static_hw is not None else _TRACE_HW
    param = next(model.parameters())
    dummy = torch.zeros(1, 3, h, w, dtype=param.dtype, device=param.device)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(_HeadOutputs(model), (dummy,), check_trace=False)
            traced = torch.jit.freeze(traced) if static_hw is not None else traced
            buffer = io.BytesIO()
            torch.jit.save(traced, buffer)
        target.write(buffer.getbuffer())
    except Exception as exc:
        raise BackendError(f"cannot export the network to TorchScript: {_first_line(exc)}") from None
    finally:
        model.train(was_training)


def onnx_cache_path(sha256: str, opset: int = DEFAULT_OPSET, cache: Path | None = None, *, network: str = "") -> Path:
    """Where the dynamic-shape ONNX graph of the checkpoint with this sha256 is cached;
    `network`: what the graph computes beyond the weights (`graph_label`: family and outputs)."""
    from ..zoo import cache_dir

    root = Path(cache) if cache is not None else cache_dir()
    torch_version = torch.__version__.split("+")[0]
    label = f"-{network}" if network else ""
    return root / "onnx" / f"{sha256[:32]}{label}-torch{torch_version}-opset{opset}-r{_EXPORT_REVISION}.onnx"


def graph_label(model: torch.nn.Module) -> str:
    """The family and the number of outputs of the exported graph (`higherhrnet-2out`)."""
    return f"{model.spec.family}-{len(model.spec.outputs)}out"


_DIGEST_SUFFIX = ".digest"
_DIGEST_FORMAT = 1


def digest_path(entry: Path) -> Path:
    """The record beside a cached graph: `NAME.onnx.digest`."""
    return entry.with_name(entry.name + _DIGEST_SUFFIX)


@dataclass
class OnnxGraph:
    """A dynamic-shape ONNX graph of the network, as bytes (what the runtime loads), where it is
    cached (None: this run's own export, not kept), and whether it came out of the cache as it
    was (then a runtime that finds it unfit makes `onnx_graph` export it again). `notes`: one
    line each about the cache (rebuilt, not writable), for the caller to show."""

    data: bytes
    entry: Path | None
    from_cache: bool
    notes: list[str] = field(default_factory=list)


def onnx_graph(
    model: torch.nn.Module, sha256: str | None, *, cache: Path | None = None, rebuild: str | None = None,
) -> OnnxGraph:
    """`model`'s dynamic-shape ONNX graph: from the cache when a checkpoint sha256 names it and
    its bytes hash to the digest recorded beside it, else exported (and written into the cache,
    with its record, when the cache can be written). `rebuild`: why the cached entry must not be
    served (a runtime found it unfit): it is exported again over itself."""
    from ..io.filesystem import FileScope

    notes: list[str] = []
    if sha256 is None:
        return OnnxGraph(_export_bytes(model), None, False, notes)
    entry = onnx_cache_path(sha256, cache=cache, network=graph_label(model))
    record = digest_path(entry)
    if rebuild is None:
        served = _verified(entry, record, sha256)
        if isinstance(served, bytes):
            return OnnxGraph(served, entry, True, notes)
        if served is not None:
            notes.append(f"{entry}: cached ONNX graph {served}; exported again")
    else:
        notes.append(f"{entry}: cached ONNX graph {rebuild}; exported again")
    data = _export_bytes(model)
    scope = FileScope("ONNX cache")
    scope.declare(entry, "cached ONNX graph")
    scope.declare(record, "its digest")
    scope.seal()
    try:
        with scope:  # a cache folder it made and could not fill is removed again
            scope.store_bytes(entry, data)
            scope.store_text(record, json.dumps(_record(data, sha256)) + "\n")
    except OSError as error:
        from ..io.output_plan import describe_os_error

        reason = describe_os_error(error) if error.errno else str(error)
        notes.append(f"cannot write the ONNX cache in {entry.parent} ({reason}); the graph is exported for this run only")
        return OnnxGraph(data, None, False, notes)
    return OnnxGraph(data, entry, False, notes)


def _export_bytes(model: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    export_onnx(model, buffer)
    return buffer.getvalue()


def _record(data: bytes, sha256: str) -> dict:
    return {
        "aepose_onnx_cache": _DIGEST_FORMAT,
        "graph_sha256": hashlib.sha256(data).hexdigest(),
        "checkpoint_sha256": sha256,
        "torch": torch.__version__.split("+")[0],
    }


def _verified(entry: Path, record: Path, sha256: str) -> bytes | str | None:
    """The entry's bytes when they hash to its record's digest and the record names this
    checkpoint; else why not (a few words), or None when there is no entry at all."""
    import stat

    try:
        if not stat.S_ISREG(os.stat(entry).st_mode):
            return "is not a regular file"
    except (FileNotFoundError, NotADirectoryError):  # no entry (or no cache folder at all)
        return None
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    try:
        with open(entry, "rb") as handle:
            data = handle.read()
        recorded = json.loads(record.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "has no digest beside it"
    except (OSError, ValueError, UnicodeDecodeError):
        return "has an unreadable digest"
    if not isinstance(recorded, dict) or recorded.get("checkpoint_sha256") != sha256:
        return "was made from another checkpoint"
    if recorded.get("graph_sha256") != hashlib.sha256(data).hexdigest():
        return "does not match its digest (damaged, truncated or replaced)"
    return data


def expected_graph_outputs(spec) -> list[tuple[str, int, int]]:
    """What the exported graph of a network with this `AENetSpec` must give, in order: each raw
    output's name, channels and stride."""
    return [(name, o.channels, o.stride) for name, o in zip(output_names(spec), spec.outputs)]


def check_graph_io(
    inputs: Sequence[tuple[str, Sequence]], outputs: Sequence[tuple[str, Sequence]], expected: Sequence[tuple[str, int, int]],
) -> str | None:
    """Why a loaded graph does not fit the network (None: it fits): one input `image` of rank 4
    with 3 channels, and the outputs `expected` (`expected_graph_outputs`: name, channels,
    stride), each of rank 4 with its channels. Dimensions are numbers, or names/None where the
    graph leaves them dynamic."""
    if [name for name, _ in inputs] != [INPUT_NAME]:
        return f"has inputs {[name for name, _ in inputs]}, not ['{INPUT_NAME}']"
    names = [name for name, _, _ in expected]
    if [name for name, _ in outputs] != names:
        return f"has outputs {[name for name, _ in outputs]}, not {names}"
    shape_in = list(inputs[0][1])
    if len(shape_in) != 4 or shape_in[1] != 3:
        return f"takes {INPUT_NAME} of shape {shape_in}, not [N, 3, H, W]"
    for (name, shape), (_, channels, stride) in zip(outputs, expected):
        shape_out = list(shape)
        if len(shape_out) != 4 or shape_out[1] != channels:
            return f"gives {name} of shape {shape_out}, not [N, {channels}, H/{stride}, W/{stride}]"
    return None
