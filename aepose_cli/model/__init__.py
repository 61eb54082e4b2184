"""Associative-embedding networks of mmpose 0.x, built from a checkpoint's own tensor shapes.

Five families, each a backbone with mmpose's module names plus an AE head (module names equal
to the official checkpoints' keys, so they load with strict=True):

| family        | backbone         | head                      | raw outputs (as the reference head returns them) |
|---------------|------------------|---------------------------|--------------------------------------------------|
| `hrnet`       | HRNet            | `AESimpleHead`, 1x1 conv  | `[2K @ 1/4]`                                     |
| `higherhrnet` | HRNet            | `AEHigherResolutionHead`  | `[2K @ 1/4, K @ 1/2]` (tags at 1/4 only)         |
| `resnet`      | ResNet           | `AESimpleHead`, 3 deconvs | `[2K @ 1/4]`                                     |
| `mobilenetv2` | MobileNetV2      | `AESimpleHead`, 3 deconvs | `[2K @ 1/4]`                                     |
| `hourglass`   | `HourglassAENet` | `AEMultiStageHead` (identity) | `[2K @ 1/4] x 4 stacks` (the published config reads the last) |

`AENet.raw_outputs(x)` returns that list; `AENetSpec.outputs` says what each holds.
`AENet.forward(x)` keeps the single-tensor interface of the HRNet-only code (`[N, 2K, H/4, W/4]`)
and refuses multi-output heads. UDP models (`*_udp`) have the tensors of their non-UDP family:
UDP is a test-time setting, not a layout.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..config import FAMILIES
from ..errors import CheckpointError
from .heads import (
    AEHigherResolutionHead,
    AEMultiStageHead,
    AESimpleHead,
    HigherResolutionHeadSpec,
    MultiStageHeadSpec,
    OutputSpec,
    SimpleHeadSpec,
)
from .hourglass import HourglassAENet, HourglassSpec
from .hrnet import HRNet, HRNetSpec
from .mobilenetv2 import MobileNetV2, MobileNetV2Spec
from .resnet import ResNet, ResNetSpec
from .state_keys import has_prefix

__all__ = [
    "AENet", "AENetSpec", "FAMILIES", "HRNet", "HRNetSpec", "OutputSpec", "RUNNABLE_FAMILIES",
    "load_checkpoint_state", "build_from_checkpoint", "detect_family", "spec_from_state",
]

BackboneSpec = HRNetSpec | ResNetSpec | MobileNetV2Spec | HourglassSpec
HeadSpec = SimpleHeadSpec | HigherResolutionHeadSpec | MultiStageHeadSpec

# The families the inference path runs (`inference.py`: every raw output aggregated as the
# reference's `forward_test` does): all of them. `build_from_checkpoint(families=...)` narrows it.
RUNNABLE_FAMILIES = frozenset(FAMILIES)


@dataclass(frozen=True)
class AENetSpec:
    """Backbone + head hyper-parameters. `head=None` means HRNet-AE's head: a 1x1 conv from the
    backbone's output to 2K channels (filled in at construction, so specs compare equal)."""

    backbone: BackboneSpec
    num_joints: int
    head: HeadSpec | None = field(default=None)

    def __post_init__(self) -> None:
        if self.head is None:
            object.__setattr__(self, "head", SimpleHeadSpec(_backbone_out_channels(self.backbone), 2 * self.num_joints))

    @classmethod
    def official(cls, width: int, num_joints: int) -> AENetSpec:
        """HRNet-AE w32/w48 as published."""
        return cls(HRNetSpec.official(width), num_joints)

    @classmethod
    def official_higherhrnet(cls, width: int, num_joints: int) -> AENetSpec:
        """HigherHRNet w32/w48 as published."""
        return cls(HRNetSpec.official(width), num_joints, HigherResolutionHeadSpec.official(width, num_joints))

    @property
    def family(self) -> str:
        if isinstance(self.backbone, HRNetSpec):
            return "higherhrnet" if isinstance(self.head, HigherResolutionHeadSpec) else "hrnet"
        if isinstance(self.backbone, ResNetSpec):
            return "resnet"
        if isinstance(self.backbone, MobileNetV2Spec):
            return "mobilenetv2"
        return "hourglass"

    @property
    def outputs(self) -> tuple[OutputSpec, ...]:
        """What each raw output holds (stride, channels, heatmaps/tags), in output order."""
        stride = _backbone_stride(self.backbone)
        if isinstance(self.head, HigherResolutionHeadSpec):
            return self.head.outputs(stride, self.num_joints)
        return self.head.outputs(stride)  # type: ignore[union-attr]

    @property
    def input_multiple(self) -> int:
        """What the input's height and width must be multiples of: the network's total stride
        (32; Hourglass-AE: 4 times 2 per hourglass level, 64 as published)."""
        if isinstance(self.backbone, HourglassSpec):
            return 4 * 2 ** (len(self.backbone.stage_channels) - 1)
        return 32

    @property
    def test_outputs(self) -> tuple[int, ...]:
        """The outputs the published test configs aggregate (mmpose's `select_output_index`):
        Hourglass-AE its last stack only, the other families all of them."""
        n = len(self.outputs)
        return (n - 1,) if isinstance(self.head, MultiStageHeadSpec) else tuple(range(n))


def _backbone_out_channels(backbone: BackboneSpec) -> int:
    return backbone.out_channels


def _backbone_stride(backbone: BackboneSpec) -> int:
    return 4 if isinstance(backbone, HRNetSpec) else backbone.stride


def _build_backbone(spec: BackboneSpec) -> nn.Module:
    if isinstance(spec, HRNetSpec):
        return HRNet(spec)
    if isinstance(spec, ResNetSpec):
        return ResNet(spec)
    if isinstance(spec, MobileNetV2Spec):
        return MobileNetV2(spec)
    return HourglassAENet(spec)


def _build_head(spec: HeadSpec) -> nn.Module:
    if isinstance(spec, SimpleHeadSpec):
        return AESimpleHead(spec)
    if isinstance(spec, HigherResolutionHeadSpec):
        return AEHigherResolutionHead(spec)
    return AEMultiStageHead(spec)


class AENet(nn.Module):
    """Backbone + AE head of any family (see the module docstring).

    `raw_outputs(x)`: the head's list of outputs, as the reference returns them.
    `forward(x)`: the single `[N, 2K, H/4, W/4]` tensor (heatmaps then tags) of a one-output
    head, the interface of today's inference path and backends; multi-output heads raise.
    """

    def __init__(self, spec: AENetSpec) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = _build_backbone(spec.backbone)
        self.keypoint_head = _build_head(spec.head)  # type: ignore[arg-type]

    @property
    def num_joints(self) -> int:
        return self.spec.num_joints

    @property
    def family(self) -> str:
        return self.spec.family

    def raw_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.keypoint_head(self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self.raw_outputs(x)
        if len(outputs) != 1:
            raise TypeError(
                f"{FAMILIES[self.family]} returns {len(outputs)} outputs; call raw_outputs() "
                "(forward() gives the single tensor of one-output heads)"
            )
        return outputs[0]


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


def detect_family(state: dict[str, torch.Tensor], source: str = "checkpoint") -> str:
    """The family a state dict belongs to, from its key grammar alone.

    Backbone: HRNet has `stage2` branches, Hourglass-AE `hourglass_modules`, MobileNetV2
    ConvModule-named `conv1.conv` and `layer1.0.conv.*`, ResNet `layer1.0.conv1` without stages.
    Head: `final_layers.*` (HigherHRNet) or `final_layer` (one output). Exactly one backbone
    grammar must match; anything else is a one-line CheckpointError naming the known families.
    """
    grammars = {
        "hrnet": "backbone.stage2.0.branches.0.0.conv1.weight" in state,
        "hourglass": has_prefix(state, "backbone.hourglass_modules.0."),
        "mobilenetv2": "backbone.conv1.conv.weight" in state and has_prefix(state, "backbone.layer1.0.conv.0.conv."),
        "resnet": "backbone.layer1.0.conv1.weight" in state and not has_prefix(state, "backbone.stage")
        and "backbone.conv1.weight" in state,
    }
    matched = [name for name, hit in grammars.items() if hit]
    known = ", ".join(FAMILIES.values())
    if len(matched) != 1:
        first = ", ".join(list(state)[:3]) or "none"
        what = "matches several families' layouts" if matched else "is not an associative-embedding checkpoint in the mmpose layout"
        raise CheckpointError(f"{source}: {what} (known: {known}; first keys: {first})")
    family = matched[0]
    if family == "hrnet":
        if has_prefix(state, "keypoint_head.final_layers."):
            return "higherhrnet"
        if "keypoint_head.final_layer.weight" not in state:
            raise CheckpointError(f"{source}: HRNet backbone without an AE head (no keypoint_head.final_layer(s) tensors; known: {known})")
    elif family in ("resnet", "mobilenetv2") and "keypoint_head.final_layer.weight" not in state:
        raise CheckpointError(f"{source}: {FAMILIES[family]} backbone without an AE head (no keypoint_head.final_layer.weight; known: {known})")
    return family


def spec_from_state(state: dict[str, torch.Tensor], source: str = "checkpoint") -> AENetSpec:
    """Infer the network (family, widths, depths, head) from tensor names and shapes; a foreign
    or unreadable layout gets a one-line CheckpointError."""
    family = detect_family(state, source)
    try:
        if family in ("hrnet", "higherhrnet"):
            backbone: BackboneSpec = HRNetSpec.from_state_dict(state)
        elif family == "resnet":
            backbone = ResNetSpec.from_state_dict(state)
        elif family == "mobilenetv2":
            backbone = MobileNetV2Spec.from_state_dict(state)
        else:
            backbone = HourglassSpec.from_state_dict(state)
        head: HeadSpec
        if family == "higherhrnet":
            head = HigherResolutionHeadSpec.from_state_dict(state)
            channels_out = head.final_channels[0]
        elif family == "hourglass":
            head = MultiStageHeadSpec.from_state_dict(state, backbone.num_stacks, backbone.out_channels)  # type: ignore[union-attr]
            channels_out = head.out_channels
        else:
            head = SimpleHeadSpec.from_state_dict(state)
            channels_out = head.out_channels
    except (KeyError, ValueError, IndexError) as exc:
        reason = str(exc).strip("'\"")
        raise CheckpointError(f"{source}: {FAMILIES[family]} layout not recognised ({reason})") from None
    if channels_out % 2:
        raise CheckpointError(f"{source}: head has {channels_out} channels, expected 2K (K heatmaps + K tags)")
    num_joints = channels_out // 2
    if isinstance(head, HigherResolutionHeadSpec) and any(c not in (num_joints, 2 * num_joints) for c in head.final_channels):
        raise CheckpointError(f"{source}: HigherHRNet outputs {head.final_channels} are not K or 2K channels for K={num_joints}")
    return AENetSpec(backbone, num_joints, head)


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


def build_from_checkpoint(
    path: str | Path, data: bytes | None = None, *, families: frozenset[str] | None = RUNNABLE_FAMILIES
) -> tuple[AENet, dict]:
    """Load an AE checkpoint in the mmpose layout, architecture read from its shapes
    (`data`: the file's bytes, as `load_checkpoint_state` takes them).

    `families`: the families the caller can run (default: every one; None: any). A checkpoint
    of another family gets a one-line CheckpointError naming it.
    """
    state, meta = load_checkpoint_state(path, data)
    spec = spec_from_state(state, str(path))
    if families is not None and spec.family not in families:
        runs = ", ".join(FAMILIES[f] for f in sorted(families))
        raise CheckpointError(
            f"{path}: a {FAMILIES[spec.family]} checkpoint; this version of aepose runs {runs} checkpoints only"
        )
    model = AENet(spec)
    check_state_matches(model, state, str(path))
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, meta
