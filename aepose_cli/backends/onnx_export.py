"""The network as an ONNX graph (torch.onnx's TorchScript exporter) or TorchScript, and the ONNX cache.

Backends that run ONNX get their graph from `cached_onnx`: exported on the fly from the loaded
model, kept under `<cache>/onnx/` (next to `<cache>/checkpoints/`, `$AEPOSE_HOME` or
`~/.cache/aepose`) under a name that holds the checkpoint's sha256, the network's family and
outputs, the torch version (the exporter) and the opset, written atomically (temp file in the
same folder, then rename). A cache that cannot be written only costs a re-export next time.

The graph's outputs are the head's raw outputs, as the reference's head returns them
(`AENet.raw_outputs`), named by `output_names`: `maps` for a one-output head (HRNet, ResNet,
MobileNetV2: K heatmaps then K tags at 1/4), `maps_stride4` and `heatmaps_stride2` for
HigherHRNet, `maps_stage0` .. `maps_stage3` for Hourglass-AE's four stacks.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import os
import secrets
import tempfile
import warnings
from collections.abc import Iterator
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
    Raises BackendError with the exporter's first line when torch.onnx cannot export it.
    """
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
            torch.onnx.export(
                _HeadOutputs(model),
                (dummy,),
                target,
                export_params=True,
                opset_version=opset,
                do_constant_folding=True,
                input_names=[INPUT_NAME],
                output_names=names,
                dynamic_axes=dynamic_axes,
                **exporter_choice,
            )
    except Exception as exc:  # the exporter raises many types (OnnxExporterError, RuntimeError...)
        raise BackendError(f"cannot export the network to ONNX (opset {opset}): {_first_line(exc)}") from None
    finally:
        model.train(was_training)


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


def export_torchscript(model: torch.nn.Module, target: str | Path, *, static_hw: tuple[int, int] | None = None) -> None:
    """Trace the `AENet` `model` to TorchScript (any input size: the network has no
    shape-dependent Python); it returns the head's raw outputs (a tuple; one tensor alone)."""
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
            traced.save(str(target))
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


@contextlib.contextmanager
def cached_onnx(model: torch.nn.Module, sha256: str | None, *, cache: Path | None = None) -> Iterator[Path]:
    """Yield the path of `model`'s dynamic-shape ONNX graph, valid inside the `with` block.

    With a checkpoint sha256 the graph is taken from (or exported into) the cache; without one,
    or when the cache folder cannot be written, it is exported into a temporary folder.
    """
    if sha256 is not None:
        target = onnx_cache_path(sha256, cache=cache, network=graph_label(model))
        if target.is_file():
            yield target
            return
        temp = target.with_name(f"{target.name}.part-{secrets.token_hex(4)}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            export_onnx(model, temp)
            os.replace(temp, target)
        except OSError:
            temp.unlink(missing_ok=True)  # read-only cache: fall through to a temporary export
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        else:
            yield target
            return
    with tempfile.TemporaryDirectory(prefix="aepose-onnx-") as folder:
        path = Path(folder) / "network.onnx"
        export_onnx(model, path)
        yield path
