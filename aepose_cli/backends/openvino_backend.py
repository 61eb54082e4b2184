"""OpenVINO on the CPU: the exported ONNX graph compiled once with dynamic shapes, f32 precision."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import BackendError


class OpenVinoBackend:
    name = "openvino"

    def __init__(self, onnx_path: Path, *, threads: int, output_names: list[str]) -> None:
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
            self.compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU", config)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BackendError(f"OpenVINO cannot compile the exported network ({first[:200]})") from None
        self.request = self.compiled.create_infer_request()
        found = [output.get_any_name() for output in self.compiled.outputs]
        if found != list(output_names):
            raise BackendError(f"the exported network's outputs are {found}, expected {list(output_names)}")
        self.output_names = list(output_names)

    def __call__(self, batch: torch.Tensor) -> list[torch.Tensor]:
        array = np.ascontiguousarray(batch.detach().to("cpu", torch.float32).numpy())
        self.request.infer({0: array})
        # The output tensors' memory belongs to the request; copy before the next call reuses it.
        return [
            torch.from_numpy(np.array(self.request.get_output_tensor(i).data, copy=True))
            for i in range(len(self.output_names))
        ]
