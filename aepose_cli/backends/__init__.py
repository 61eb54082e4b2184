"""The network behind one call: `[N, 3, H, W]` -> the head's raw outputs, float32, nothing else.

The outputs are a list, as the reference's head returns them (`AENet.raw_outputs`; HRNet-AE one
`[N, 2K, H/4, W/4]`, HigherHRNet two resolutions, Hourglass-AE four stacks; `AENetSpec.outputs`
says what each holds). Preprocessing, flip/scale aggregation and grouping stay in `inference.py`
/ `grouping.py`; a backend only runs the backbone and the AE head. Three exist:

* `torch`       PyTorch eager: the exact path (golden fixtures were recorded with it).
* `onnxruntime` ONNX Runtime (CPU EP; CUDA EP opt-in where its package is installed).
* `openvino`    OpenVINO (CPU, f32 inference precision).

The default is `torch`: ONNX Runtime's and OpenVINO's kernels round differently (~1e-6 on the
outputs) and that reorders near-equal peaks in 5 (ONNX Runtime) and 4 (OpenVINO) of the 34
golden end-to-end cases (README "Speed"), so the faster runtimes are opt-in. `auto` is that opt-in without naming a runtime: for fp32 on CPU the
fastest one installed (OpenVINO, then ONNX Runtime), torch otherwise (and always on CUDA, and for
fp16/bf16).
ONNX Runtime and OpenVINO are imported only when chosen: importing `aepose_cli` never imports
them.
"""
from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Protocol

import torch

from ..config import BACKEND_CHOICES, BACKENDS
from ..errors import BackendError, ConfigError

if TYPE_CHECKING:
    from ..model import AENet

# The Python package each backend needs, and the pip extra that installs it.
_PACKAGES = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "openvino")}


class NetworkBackend(Protocol):
    """What the engine calls: one forward pass, the head's raw outputs (float32, on `device`)."""

    name: str

    def __call__(self, batch: torch.Tensor) -> list[torch.Tensor]: ...


def is_installed(name: str) -> bool:
    """Whether the package that backend `name` needs can be imported (without importing it)."""
    if name == "torch":
        return True
    return importlib.util.find_spec(_PACKAGES[name][0]) is not None


def resolve_backend(name: str, device: torch.device | str, precision: str = "fp32") -> str:
    """The concrete backend for `name` on `device` (`auto`: openvino, else onnxruntime, for fp32 on CPU)."""
    device = torch.device(device)
    if name not in BACKEND_CHOICES:
        raise ConfigError(f"--backend must be one of {', '.join(BACKEND_CHOICES)}, got {name!r}")
    if name != "auto":
        if name == "openvino" and device.type != "cpu":
            raise ConfigError("--backend openvino runs on the CPU only; use --device cpu")
        return name
    if device.type == "cpu" and precision == "fp32":
        # The fastest first, as measured by benchmarks/bench_backends.py (README "Speed"): OpenVINO
        # is as fast as or faster than ONNX Runtime on every input measured (up to 1.3x on AMD EPYC),
        # ONNX Runtime at most 1.05x faster than it anywhere.
        for runtime in ("openvino", "onnxruntime"):
            if is_installed(runtime):
                return runtime
    return "torch"


def missing_package_error(name: str) -> BackendError:
    package, extra = _PACKAGES[name]
    return BackendError(
        f"--backend {name} needs the '{package}' package, which is not installed "
        f"(pip install 'aepose-cli[{extra}]')"
    )


def create_backend(
    name: str,
    model: AENet,
    *,
    device: torch.device,
    precision: str = "fp32",
    threads: int | None = None,
    checkpoint_sha256: str | None = None,
) -> NetworkBackend:
    """Build backend `name` (already resolved, not `auto`) for `model`, once per model.

    `checkpoint_sha256` identifies the weights for the on-disk ONNX cache; without it the graph
    is exported in memory (or a temporary folder) and not kept.
    """
    if name == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(model, device=device, precision=precision)
    if precision != "fp32":
        raise ConfigError(f"--backend {name} runs fp32 only; --precision {precision} needs --backend torch")
    if not is_installed(name):
        raise missing_package_error(name)
    threads = threads if threads is not None else torch.get_num_threads()
    from .onnx_export import output_names

    names = output_names(model.spec)
    if name == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend

        def build(graph: bytes) -> NetworkBackend:
            return OnnxRuntimeBackend(graph, device=device, threads=threads, output_names=names)
    elif name == "openvino":
        from .openvino_backend import OpenVinoBackend

        def build(graph: bytes) -> NetworkBackend:
            return OpenVinoBackend(graph, threads=threads, output_names=names)
    else:
        raise ConfigError(f"unknown backend {name!r}")
    return _from_verified_graph(build, model, checkpoint_sha256)


def _from_verified_graph(build, model: AENet, checkpoint_sha256: str | None) -> NetworkBackend:
    """The backend on the network's ONNX graph (`onnx_export.onnx_graph`: verified against its
    digest when cached), its inputs and outputs checked against the network; a cached graph the
    runtime cannot load, or that does not fit, is exported again once. The cache's notes travel
    on the backend (`notes`), for the command line to show."""
    from .onnx_export import check_graph_io, expected_graph_outputs, onnx_graph

    expected = expected_graph_outputs(model.spec)
    graph = onnx_graph(model, checkpoint_sha256)
    for attempt in (1, 2):
        try:
            backend = build(graph.data)
            unfit = check_graph_io(backend.graph_inputs(), backend.graph_outputs(), expected)
        except BackendError as error:
            if not graph.from_cache or attempt == 2:
                raise
            unfit = f"cannot be loaded ({str(error).split('(', 1)[-1].rstrip(')')[:120]})"
        if unfit is None:
            backend.notes = graph.notes
            return backend
        if not graph.from_cache or attempt == 2:
            raise BackendError(f"the exported network {unfit}")
        notes = graph.notes
        graph = onnx_graph(model, checkpoint_sha256, rebuild=unfit)
        graph.notes = notes + graph.notes
    raise AssertionError("unreachable")


__all__ = [
    "BACKENDS",
    "BACKEND_CHOICES",
    "NetworkBackend",
    "create_backend",
    "is_installed",
    "resolve_backend",
    "missing_package_error",
]
