"""Shared helpers of the benchmarks: where the shared data is, and full-size test models.

The official checkpoints cannot be downloaded here, so full-size networks are built from the
published layout with random weights: their speed is the real network's speed.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TINY_CHECKPOINT = SHARED / "golden" / "checkpoints" / "ae_hrnet_tiny_coco_seed0.pth"
CROWDED_IMAGE = SHARED / "data" / "coco-mini-val2017" / "val2017" / "000000217285.jpg"


def full_size_model(width: int = 32, num_joints: int = 17, seed: int = 0):
    """An official-layout HRNet-AE (w32/w48) with random weights, in eval mode."""
    from aepose_cli.model import AENet, AENetSpec

    torch.manual_seed(seed)
    return AENet(AENetSpec.official(width, num_joints)).eval()


# Published layouts of the other families, by the name the benchmarks take (tests/fixtures/family/
# layouts.json.gz holds every published checkpoint's tensor names and shapes, as mmpose 0.29 builds them).
PUBLISHED_LAYOUTS = {
    "hrnet_w32": "hrnet_w32_coco_512x512",
    "hrnet_w48": "hrnet_w48_coco_512x512",
    "higherhrnet_w32": "higherhrnet_w32_coco_512x512",
    "higherhrnet_w48": "higherhrnet_w48_coco_512x512",
    "resnet50": "res50_coco_512x512",
    "mobilenetv2": "mobilenetv2_coco_512x512",
    "hourglass": "hourglass_ae_coco_512x512",
}


def published_model(name: str, seed: int = 0):
    """The published network `name` (a `PUBLISHED_LAYOUTS` key) with random weights, in eval
    mode, built by shape from its official layout: the real network's speed."""
    import gzip
    import json

    from aepose_cli.model import AENet, spec_from_state

    layouts = json.loads(gzip.decompress((REPO / "tests" / "fixtures" / "family" / "layouts.json.gz").read_bytes()))
    layout = layouts[PUBLISHED_LAYOUTS[name]]["state_dict"]
    spec = spec_from_state({k: torch.empty(shape, device="meta") for k, shape, _ in layout}, name)
    torch.manual_seed(seed)
    return AENet(spec).eval()


def timed(fn, repeat: int = 3) -> float:
    """Median wall time of `repeat` calls (after one warm-up call)."""
    fn()
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)
