"""Speed of the keypoint evaluator vs pycocotools (and xtcocotools, faster-coco-eval if present).

Ground truth: the 2213 real val2017 annotations of `../shared/data/coco-val2017-kpts-partial`
(538 images, no pixels needed). Results: deterministic noisy copies of every evaluable GT person
plus false positives, 10,000 detections by default (more than 20 per image on many images, so
the maxDets cut is exercised). Every evaluator gets the same in-memory dataset and results
(JSON parsing is not timed) and runs the full load -> evaluate -> accumulate -> summarize path.
The script fails if pycocotools' or xtcocotools' numbers differ from ours by more than 1e-12.

Run from the repository root:  python -m benchmarks.bench_evaluate [--detections N] [--repeat R]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from aepose_cli.evaluation.cocoeval import METRIC_NAMES, evaluate_keypoints
from aepose_cli.keypoints import COCO

ROOT = Path(__file__).resolve().parents[1]
ANNOTATIONS = (
    ROOT.parent / "shared" / "data" / "coco-val2017-kpts-partial" / "person_keypoints_val2017.json"
)
EXACT = 1e-12


def make_results(dataset: dict, num_detections: int, seed: int = 0) -> list[dict]:
    """Noisy copies of the evaluable GT people (about 2/3 of the detections) + false positives."""
    rng = np.random.default_rng(seed)
    people = [
        a
        for a in dataset["annotations"]
        if not a.get("iscrowd") and any(v > 0 for v in a["keypoints"][2::3])
    ]
    sizes = {
        img["id"]: (img.get("width", 640), img.get("height", 480)) for img in dataset["images"]
    }
    num_copies = (2 * num_detections) // 3
    results = [_noisy_copy(people[i % len(people)], rng) for i in range(num_copies)]
    image_ids = sorted(sizes)
    for _ in range(num_detections - num_copies):
        image_id = image_ids[int(rng.integers(len(image_ids)))]
        results.append(_false_positive(image_id, sizes[image_id], rng))
    return [results[i] for i in rng.permutation(len(results))]


def _noisy_copy(person: dict, rng: np.random.Generator) -> dict:
    truth = np.array(person["keypoints"], dtype=np.float64).reshape(-1, 3)
    labelled = truth[:, 2] > 0
    scale = float(np.sqrt(max(person["area"], 1.0)))
    level = float(rng.choice([0.01, 0.03, 0.06, 0.12, 0.25]))
    centre = truth[labelled, :2].mean(axis=0)
    xy = np.where(
        labelled[:, None], truth[:, :2], centre + rng.normal(0, scale / 4, truth[:, :2].shape)
    )
    xy = xy + rng.normal(0, level * scale, xy.shape)
    scores = rng.uniform(0.05, 1.0, len(truth))
    kpts = np.column_stack([np.round(xy, 2), np.round(scores, 3)])
    return {
        "image_id": person["image_id"],
        "category_id": 1,
        "keypoints": kpts.ravel().tolist(),
        "score": float(np.round(rng.uniform(0.3, 1.0) * np.exp(-2 * level), 4)),
    }


def _false_positive(image_id: int, size: tuple[int, int], rng: np.random.Generator) -> dict:
    k = len(COCO.sigmas)
    extent = rng.uniform(20, 300)
    xy = rng.uniform(0, 1, (k, 2)) * extent + rng.uniform(0, 1, 2) * np.array(size)
    kpts = np.column_stack([np.round(xy, 2), np.round(rng.uniform(0.05, 1.0, k), 3)])
    return {
        "image_id": image_id,
        "category_id": 1,
        "keypoints": kpts.ravel().tolist(),
        "score": float(np.round(rng.uniform(0.0, 0.7), 4)),
    }


def _run_cocoeval(
    coco_cls, eval_cls, dataset: dict, results: list[dict], params_sigmas=None, **kwargs
) -> dict[str, float]:
    """The reference-style call: load GT, loadRes, evaluate, accumulate, summarize (silenced)."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco_cls()
        gt.dataset = dataset
        gt.createIndex()
        dt = gt.loadRes(results)
        evaluator = eval_cls(gt, dt, "keypoints", **kwargs)
        if params_sigmas is not None:
            evaluator.params.kpt_oks_sigmas = params_sigmas
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return dict(zip(METRIC_NAMES, (float(v) for v in evaluator.stats[:10])))


def _pycocotools(sigmas: np.ndarray) -> Callable | None:
    try:
        from pycocotools.coco import COCO as PyCOCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        return None

    def run(dataset: dict, results: list[dict]) -> dict[str, float]:
        # pycocotools reads the sigmas from its params; its defaults (.26/10, ...) differ from
        # the reference's literals (0.026, ...) in the last bit, so hand it the same array.
        return _run_cocoeval(PyCOCO, COCOeval, dataset, results, params_sigmas=sigmas)

    return run


def _xtcocotools(sigmas: np.ndarray) -> Callable | None:
    try:
        from xtcocotools.coco import COCO as XtCOCO
        from xtcocotools.cocoeval import COCOeval
    except ImportError:
        return None

    def run(dataset: dict, results: list[dict]) -> dict[str, float]:
        return _run_cocoeval(XtCOCO, COCOeval, dataset, results, sigmas=sigmas, use_area=True)

    return run


def _faster_coco_eval(sigmas: np.ndarray) -> Callable | None:
    try:
        from faster_coco_eval import COCO as FastCOCO
        from faster_coco_eval import COCOeval_faster
    except ImportError:
        return None

    def run(dataset: dict, results: list[dict]) -> dict[str, float]:
        return _run_cocoeval(
            FastCOCO, COCOeval_faster, dataset, results, kpt_oks_sigmas=list(sigmas), use_area=True
        )

    return run


def _timed(run: Callable, dataset: dict, results: list[dict], repeat: int) -> tuple[float, dict]:
    """Best wall time of `repeat` runs, each on fresh copies (COCO loaders mutate their input)."""
    best, metrics = float("inf"), {}
    for _ in range(repeat):
        data, dets = copy.deepcopy(dataset), copy.deepcopy(results)
        start = time.perf_counter()
        metrics = run(data, dets)
        best = min(best, time.perf_counter() - start)
    return best, metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detections", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of our evaluator (best kept)")
    args = parser.parse_args(argv)

    dataset = json.loads(ANNOTATIONS.read_text())
    results = make_results(dataset, args.detections)
    sigmas = np.array(COCO.sigmas)
    ours_time, ours = _timed(
        lambda d, r: evaluate_keypoints(d, r, sigmas, use_area=True), dataset, results, args.repeat
    )
    rows = [("aepose (numpy)", ours_time, ours)]
    for name, factory in (
        ("pycocotools", _pycocotools),
        ("xtcocotools", _xtcocotools),
        ("faster-coco-eval", _faster_coco_eval),
    ):
        run = factory(sigmas)
        if run is not None:
            rows.append((name, *_timed(run, dataset, results, 1)))

    table = Table(
        title=f"COCO keypoint evaluation: {len(results)} detections, "
        f"{len(dataset['annotations'])} GT annotations"
    )
    for column in ("evaluator", "seconds", "x aepose", "AP", "AR", "max |diff| vs aepose"):
        table.add_column(column, justify="left" if column == "evaluator" else "right")
    failed = False
    for name, seconds, metrics in rows:
        diff = max(abs(metrics[m] - ours[m]) for m in METRIC_NAMES)
        failed |= name in ("pycocotools", "xtcocotools") and diff > EXACT
        table.add_row(
            name,
            f"{seconds:.3f}",
            f"{seconds / ours_time:.1f}",
            f"{metrics['AP']:.4f}",
            f"{metrics['AR']:.4f}",
            f"{diff:.1e}",
        )
    Console().print(table)
    if failed:
        print("MISMATCH: a reference evaluator disagrees with ours", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
