"""Network time vs grouping time per image (issue: grouping <= 5% of the w32 network on CPU).

Image: the crowded COCO photo 217285 (14 annotated people), flip test on, scale 1.
* network: the full-size w32 HRNet-AE (official layout, random weights), both flip passes.
* grouping (everything after the network: NMS, top-k, matching, adjust, refine, mapping back,
  pose NMS) on two kinds of maps:
  - "perfect": what a trained network outputs for this image, i.e. the golden fixture's maps
    (Gaussian peaks at the annotated joints, constant tags per person), flip pass mirrored;
  - "tiny random": the tiny test checkpoint's maps on the same image (dozens of spurious
    people: a stress case for matching and refine).
* reference-style grouping: the same steps with the reference's per-person full-map refine
  loop (numpy), for the speed-up.

Run: python benchmarks/bench_grouping.py
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from aepose_cli.config import InferenceConfig  # noqa: E402
from aepose_cli.estimator import PoseEstimator  # noqa: E402
from aepose_cli.grouping import adjust, match_by_tag, person_scores, top_k  # noqa: E402
from aepose_cli.inference import InferenceEngine, aggregate_outputs  # noqa: E402
from aepose_cli.keypoints import COCO  # noqa: E402
from aepose_cli.model import build_from_checkpoint  # noqa: E402

from _common import CROWDED_IMAGE, SHARED, TINY_CHECKPOINT, full_size_model, timed  # noqa: E402


def reference_refine(joints: np.ndarray, heatmaps: np.ndarray, tags: np.ndarray) -> np.ndarray:
    """The reference's refine: one full scan of every joint map per person (for timing)."""
    k, h, w = heatmaps.shape
    for person in joints:
        found = [tags[j, int(np.clip(person[j, 1], 0, h - 1)), int(np.clip(person[j, 0], 0, w - 1))] for j in range(k) if person[j, 2] > 0]
        prev = np.mean(found, axis=0)
        for j in range(k):
            dist = ((tags[j] - prev[None, None, :]) ** 2).sum(axis=2) ** 0.5
            score = heatmaps[j] - np.round(dist)
            y, x = np.unravel_index(np.argmax(score), score.shape)
            if heatmaps[j, y, x] > 0 and person[j, 2] == 0:
                person[j, :3] = (x + 0.5, y + 0.5, heatmaps[j, y, x])
    return joints


def reference_grouping(maps, config) -> None:
    cands = top_k(maps.heatmaps, maps.tags, config.max_people)
    joints = adjust(match_by_tag(cands, COCO, config), maps.heatmaps)
    person_scores(joints)
    reference_refine(joints, maps.heatmaps.numpy(), maps.tags.numpy())


def main() -> None:
    torch.set_grad_enabled(False)
    image = cv2.imread(str(CROWDED_IMAGE))
    config = InferenceConfig(scales=(1.0,), flip=True)
    console = Console(width=140)

    w32 = full_size_model(32)
    engine = InferenceEngine(w32, COCO, config)
    geometry, inputs = engine.prepare(image)
    batch = torch.stack([inputs[0], torch.flip(inputs[0], [2])])
    network_s = timed(lambda: engine.network(batch), repeat=3)

    # Estimator wrapper for grouping (the network inside it is never run here).
    est = PoseEstimator(checkpoint=TINY_CHECKPOINT, config=config)

    raw = np.load(SHARED / "golden" / "grouping" / "217285.npz")["raw"].astype(np.float32)[0]
    raw_t = torch.from_numpy(raw)
    mirrored = torch.flip(raw_t[torch.cat([torch.tensor(COCO.flip_index), 17 + torch.tensor(COCO.flip_index)])], [2])
    perfect, _ = aggregate_outputs(geometry, [raw_t], [mirrored], torch.tensor(COCO.flip_index))
    tiny_maps = InferenceEngine(build_from_checkpoint(TINY_CHECKPOINT)[0], COCO, config).infer([image])[0]

    rows = []
    for name, maps in (("perfect maps", perfect), ("tiny random maps", tiny_maps)):
        n_people = len(est.poses_from_maps(maps))
        ours = timed(lambda maps=maps: est.poses_from_maps(maps), repeat=5)
        ref = timed(lambda maps=maps: reference_grouping(maps, config), repeat=1)
        rows.append((name, n_people, ours, ref))

    table = Table(title=f"w32, {image.shape[1]}x{image.shape[0]} -> canvas {geometry.base_size_wh}, flip, CPU threads={torch.get_num_threads()}")
    for col in ("maps", "people", "network ms", "grouping ms", "grouping / network", "reference-style grouping ms", "speed-up"):
        table.add_column(col, justify="right")
    for name, n_people, ours, ref in rows:
        table.add_row(
            name, str(n_people), f"{1000 * network_s:.0f}", f"{1000 * ours:.1f}",
            f"{100 * ours / network_s:.1f}%", f"{1000 * ref:.0f}", f"{ref / ours:.0f}x",
        )
    console.print(table)


if __name__ == "__main__":
    main()
