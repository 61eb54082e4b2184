"""ONNX Runtime: one `InferenceSession` per model, dynamic batch/height/width, reused for every shape."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import BackendError, ConfigError


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, graph: bytes, *, device: torch.device, threads: int, output_names: list[str]) -> None:
        """`graph`: the ONNX model's bytes (verified by the cache before they get here);
        `output_names`: the head's outputs to fetch, in order (`onnx_export.output_names`)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: no warnings on stderr
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ConfigError(
                    "--backend onnxruntime --device cuda needs onnxruntime-gpu (the CUDA execution "
                    "provider is not available); use --backend torch"
                )
            providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(graph, sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BackendError(f"ONNX Runtime cannot load the exported network ({first[:200]})") from None
        self.input_name = self.session.get_inputs()[0].name
        # Names and shapes are checked against the network by the caller (onnx_export.check_graph_io),
        # which exports a cached graph that does not fit again.
        self.output_names = list(output_names)
        self.device = device
        self.notes: list[str] = []

    def graph_inputs(self) -> list[tuple[str, list]]:
        return [(node.name, list(node.shape)) for node in self.session.get_inputs()]

    def graph_outputs(self) -> list[tuple[str, list]]:
        return [(node.name, list(node.shape)) for node in self.session.get_outputs()]

    def __call__(self, batch: torch.Tensor) -> list[torch.Tensor]:
        array = np.ascontiguousarray(batch.detach().to("cpu", torch.float32).numpy())
        outs = self.session.run(self.output_names, {self.input_name: array})
        return [torch.from_numpy(out).to(self.device) for out in outs]
