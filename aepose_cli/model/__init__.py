"""HRNet + associative-embedding network, built from a checkpoint's own tensor shapes."""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from .head import AEHead
from .hrnet import HRNet, HRNetSpec

__all__ = ["AENet", "AENetSpec", "HRNet", "HRNetSpec", "load_checkpoint_state", "build_from_checkpoint"]


@dataclass(frozen=True)
class AENetSpec:
    backbone: HRNetSpec
    num_joints: int

    @classmethod
    def official(cls, width: int, num_joints: int) -> AENetSpec:
        return cls(HRNetSpec.official(width), num_joints)


class AENet(nn.Module):
    """Backbone + head; `forward` returns `[N, 2K, H/4, W/4]` (heatmaps then tags)."""

    def __init__(self, spec: AENetSpec) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = HRNet(spec.backbone)
        self.keypoint_head = AEHead(spec.backbone.out_channels, spec.num_joints)

    @property
    def num_joints(self) -> int:
        return self.spec.num_joints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.keypoint_head(self.backbone(x))


def load_checkpoint_state(path: str | Path, data: bytes | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint file safely (weights_only) and return (state_dict, meta).

    Accepts mmcv's `{'state_dict', 'meta'}` files and bare state dicts, and strips a leading
    `module.` as mmcv's loader does (`load_checkpoint` in mmcv/runner/checkpoint.py).
    `data`: the file's bytes, already read (a worker that has no access to `path` gets them
    from the driver); `path` then only names it in messages.
    """
    path = Path(path)
    if data is None and not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        source = path if data is None else io.BytesIO(data)
        with warnings.catch_warnings():
            # torch < 2.3 warns about its own TypedStorage use while it loads; nothing the
            # caller did, and nothing they can act on (the filter ends with the load).
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
            obj = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        text = str(exc).strip()
        if "Weights only load failed" in text or "weights_only" in text:
            raise CheckpointError(
                f"{path}: refused: it holds pickled Python objects besides tensors, and loading "
                "them could run code; re-save it as a plain state dict (torch.save(model.state_dict(), ...))"
            ) from None
        reason = text.splitlines()[0] if text else type(exc).__name__
        if len(reason) > 160:  # cut at a word, and say so
            reason = reason[:160].rsplit(" ", 1)[0] + " ..."
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None
    meta: dict = {}
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        meta = obj.get("meta") or {}
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds no state dict of tensors")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}
    return state, meta if isinstance(meta, dict) else {}


def spec_from_state(state: dict[str, torch.Tensor], source: str = "checkpoint") -> AENetSpec:
    """Infer the network from tensor shapes; a foreign file gets a clear error."""
    head_key = "keypoint_head.final_layer.weight"
    if "backbone.conv1.weight" not in state or head_key not in state:
        first = ", ".join(list(state)[:3]) or "none"
        raise CheckpointError(
            f"{source}: not an HRNet associative-embedding checkpoint in the mmpose layout "
            f"(no backbone.conv1.weight / {head_key}; first keys: {first})"
        )
    try:
        backbone = HRNetSpec.from_state_dict(state)
    except (KeyError, ValueError, IndexError) as exc:
        raise CheckpointError(f"{source}: HRNet layout not recognised ({exc})") from None
    channels_out = state[head_key].shape[0]
    if channels_out % 2:
        raise CheckpointError(f"{source}: head has {channels_out} channels, expected 2K")
    return AENetSpec(backbone, channels_out // 2)


def check_state_matches(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict key/shape check with an error naming the first offending keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (first: {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:3])})")
    if wrong:
        problems.append(f"{len(wrong)} wrong shapes (first: {'; '.join(wrong[:2])})")
    if problems:
        raise CheckpointError(f"{source}: state dict does not match the network: " + "; ".join(problems))


def build_from_checkpoint(path: str | Path, data: bytes | None = None) -> tuple[AENet, dict]:
    """Load any HRNet-AE checkpoint in the mmpose layout, architecture read from its shapes
    (`data`: the file's bytes, as `load_checkpoint_state` takes them)."""
    state, meta = load_checkpoint_state(path, data)
    spec = spec_from_state(state, str(path))
    model = AENet(spec)
    check_state_matches(model, state, str(path))
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, meta
