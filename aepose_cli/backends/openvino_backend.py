"""OpenVINO on the CPU: the exported ONNX graph compiled once with dynamic shapes, f32 precision."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import BackendError


class OpenVinoBackend:
    name = "openvino"

    def __init__(self, graph: bytes, *, threads: int, output_names: list[str]) -> None:
        """`graph`: the ONNX model's bytes (verified by the cache before they get here);
        `output_names`: the head's outputs, in order (`onnx_export.output_names`)."""
        import openvino as ov

        core = ov.Core()
        config = {
            # f32 explicitly: on CPUs with bf16/AMX OpenVINO would otherwise lower the precision.
            "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
            "INFERENCE_NUM_THREADS": str(max(1, int(threads))),
        }
        try:
            self.model = core.read_model(graph)
            self.compiled = core.compile_model(self.model, "CPU", config)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BackendError(f"OpenVINO cannot compile the exported network ({first[:200]})") from None
        self.request = self.compiled.create_infer_request()
        self.output_names = list(output_names)
        self.notes: list[str] = []

    def graph_inputs(self) -> list[tuple[str, list]]:
        return [(node.get_any_name(), _dims(node.get_partial_shape())) for node in self.model.inputs]

    def graph_outputs(self) -> list[tuple[str, list]]:
        return [(node.get_any_name(), _dims(node.get_partial_shape())) for node in self.model.outputs]

    def __call__(self, batch: torch.Tensor) -> list[torch.Tensor]:
        array = np.ascontiguousarray(batch.detach().to("cpu", torch.float32).numpy())
        self.request.infer({0: array})
        # The output tensors' memory belongs to the request; copy before the next call reuses it.
        return [
            torch.from_numpy(np.array(self.request.get_output_tensor(i).data, copy=True))
            for i in range(len(self.output_names))
        ]


def _dims(shape) -> list:
    """A partial shape's dimensions: numbers where static, None where dynamic."""
    return [dim.get_length() if dim.is_static else None for dim in shape]
