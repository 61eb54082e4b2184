"""`aepose export`: the network alone (no grouping) as ONNX or TorchScript, for deployment.

The file maps a normalised image batch `image` `[N, 3, H, W]` (H, W multiples of 32; 64 for
Hourglass-AE) to the head's raw outputs as the reference's head returns them (HRNet, ResNet,
MobileNetV2: `maps` `[N, 2K, H/4, W/4]`, channels 0..K-1 heatmaps, K..2K-1 the tags; HigherHRNet
and Hourglass-AE: several, `backends.onnx_export.output_names`). docs/export.md documents each
family's layout, the normalisation, the flip index and the rest of the pipeline.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

from ..config import MAX_CANVAS_SIDE
from ..errors import ConfigError, OutputError
from ..types import Progress

FORMATS = ("onnx", "torchscript")
# The network's total stride: every branch must divide H and W (aepose itself pads to 64).
STRIDE = 32


def parse_static(value: str | None) -> tuple[int, int] | None:
    """`"512,704"` -> (512, 704): height, width, both multiples of 32."""
    if value is None:
        return None
    try:
        h, w = (int(v) for v in value.replace(" ", "").split(","))
    except ValueError:
        raise ConfigError(f"--static expects H,W such as 512,512, got {value!r}") from None
    if h <= 0 or w <= 0 or h % STRIDE or w % STRIDE:
        raise ConfigError(f"--static {h},{w}: height and width must be positive multiples of {STRIDE}")
    if max(h, w) > MAX_CANVAS_SIDE:
        # The cap inference has (config.MAX_CANVAS_SIDE): a bigger traced input is gigabytes of zeros.
        raise ConfigError(f"--static {h},{w}: at most {MAX_CANVAS_SIDE} pixels a side (the largest canvas aepose runs)")
    return h, w


def run_export(
    *,
    model_name: str | None,
    checkpoint: Path | None,
    fmt: str,
    out: Path,
    opset: int | None = None,
    static_hw: tuple[int, int] | None = None,
    progress: Progress | None = None,
) -> tuple[Path, list[str]]:
    """Write the network of a zoo model or checkpoint to `out` atomically; returns `out` and
    one description per output (`name [N, C, H/s, W/s]`). `progress`: where a model download
    shows. Only the tensors matter here: the input size, UDP flag and keypoint set a model
    runs with are not part of the network.

    `out` is planned as every command's outputs are (`io.output_plan`): it may not be the
    checkpoint, and a folder that cannot be written (read-only, a missing parent below a file) is
    refused before the model loads (exit 6). The network is exported into memory and written by
    the plan's scope, so a full disk is one line too (exit 6) and leaves no temporary."""
    from ..backends.onnx_export import DEFAULT_OPSET, export_onnx, export_torchscript, output_names
    from ..io.output_plan import OutputPlan, output_error
    from ..model import build_from_checkpoint
    from ..zoo import resolve_checkpoint

    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}")
    if fmt != "onnx" and opset is not None:
        raise ConfigError("--opset applies to --format onnx only")
    out = Path(out)
    if out.is_dir() or str(out).endswith(("/", os.sep)):
        raise ConfigError(f"--out {out}: give a file name, not a folder")
    if checkpoint is not None and out.exists() and Path(checkpoint).exists() and out.resolve() == Path(checkpoint).resolve():
        raise ConfigError(f"--out {out} is the input checkpoint; choose another file")
    if not out.parent.is_dir():
        # An output that cannot be written (README: exit 6), as the other commands' output plan says it.
        raise OutputError(f"--out {out}: folder {out.parent} does not exist")
    plan = OutputPlan()
    if checkpoint is not None:
        plan.add_input(checkpoint)
    plan.add_output(out, "--out")
    scope = plan.check()
    path, _ = resolve_checkpoint(model_name, checkpoint, progress=progress)
    net, _ = build_from_checkpoint(path)
    multiple = net.spec.input_multiple
    if static_hw is not None and (static_hw[0] % multiple or static_hw[1] % multiple):
        raise ConfigError(f"--static {static_hw[0]},{static_hw[1]}: this network needs multiples of {multiple}")
    buffer = io.BytesIO()
    if fmt == "onnx":
        export_onnx(net, buffer, opset=opset if opset is not None else DEFAULT_OPSET, static_hw=static_hw)
    else:
        export_torchscript(net, buffer, static_hw=static_hw)
    try:
        scope.store_bytes(out, buffer.getbuffer())
    except OSError as error:
        raise output_error(error, f"--out {out}") from None
    described = [
        f"'{name}' [N, {o.channels}, H/{o.stride}, W/{o.stride}]" for name, o in zip(output_names(net.spec), net.spec.outputs)
    ]
    return out, described
