"""PyTorch eager: the exact path, the numbers the golden fixtures were recorded with."""
from __future__ import annotations

import contextlib

import torch

from ..host_memory import before_pass
from ..model import AENet


class TorchBackend:
    """Runs the `AENet` module itself (fp32 exact; fp16/bf16 through autocast)."""

    name = "torch"

    def __init__(self, model: AENet, *, device: torch.device, precision: str = "fp32") -> None:
        self.device = device
        self.precision = precision
        self.model = model.to(device).eval()
        # On CPU, activations reuse the same pages from batch to batch where the process's owner
        # turned that on (aepose_cli.host_memory): a new input shape then trims the heap first.
        self._keeps_memory = device.type == "cpu"

    def _exact_math(self):
        """fp32 on CUDA: TF32 off for the forward pass only, then the caller's settings back.

        cuDNN's default TF32 convolutions differ from the reference's float32 ones by ~1e-3,
        enough to move peaks; the flags are process-wide, so they are restored afterwards
        rather than changed for the whole program.
        """
        if self.device.type != "cuda" or self.precision != "fp32":
            return contextlib.nullcontext()
        return tf32_disabled()

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """`[N, 3, H, W]` -> the head's raw outputs, float32 on the model's device (HRNet-AE:
        one `[N, 2K, H/4, W/4]`).

        Eval-mode BatchNorm makes samples independent; on CPU a sample's numbers do not depend
        on its batch partners, though batch size 1 takes another kernel path (~1e-6 apart).
        """
        if self._keeps_memory:
            before_pass(tuple(batch.shape))
        with self._exact_math(), self._autocast():
            return [out.float() for out in self.model.raw_outputs(batch.to(self.device, non_blocking=True))]


@contextlib.contextmanager
def tf32_disabled():
    """TF32 off for cuDNN convolutions and CUDA matmuls inside the block, restored after it."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
