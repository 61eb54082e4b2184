"""Error diagnosis of keypoint results: the taxonomy of Ronchi & Perona (ICCV 2017).

"Benchmarking and Error Diagnosis in Multi-Instance Pose Estimation" explains AP by the errors
behind it. This module computes every number of that analysis (no plotting; `report.py` draws
them) on top of the evaluator's own loading, OKS and matching (`aepose_cli.evaluation.cocoeval`), so the
baseline curves are the evaluator's curves bit for bit.

Localization errors (per keypoint of a detection matched to a GT at OKS >= 0.1, GT with at least
one labelled keypoint). For each labelled keypoint the keypoint similarity
`ks = exp(-d^2 / (2 sigma)^2 / area / 2)` is computed against every person of the image and
against every person's left/right-mirrored skeleton; the best one decides:

* good: best ks > .85 on the matched person's own keypoint;
* jitter: .5 <= ks < .85 on the matched person's own keypoint;
* inversion: ks >= .5 on the matched person's mirrored keypoint (left/right confusion);
* swap: ks >= .5 on a keypoint of another person (or its mirror);
* miss: ks < .5 everywhere.

"What if this error were fixed" curves (cumulative, in the paper's order): the PR curves after
correcting misses, then also swaps, inversions and jitter, then re-scoring every detection with
its optimal score (its best OKS with a non-ignored GT at the lowest threshold, decayed by a
soft-NMS among the detections of its image), then ignoring background false positives (no GT
matched at that OKS) and finally false negatives (GT unmatched at that or a lower OKS).

The definitions and every detail that moves a number follow the research code
`matteorr/coco-analyze` (9eb8a0a), against which `tests/test_report.py` checks the numbers
(fixtures recorded by `tests/fixtures/record_coco_analyze.py`). Its behaviours that look
unintended are kept where they define the numbers people publish, and named here:

* a corrected keypoint is moved to `gt_x + sqrt(-2 ln(ks) * area * sigma^2)` (y = gt_y), which
  gives ks' = ks^(1/4), not ks, because the OKS uses (2 sigma)^2; jitter is corrected to ks=.85,
  misses to ks=.5, inversions and swaps to the ks they reached on the wrong keypoint (all
  before the ^(1/4));
* the optimal-score soft-NMS sees the keypoints as corrected for the *last* area range (coco-
  analyze leaves them so); here each area range uses its own corrections
  (`soft_nms_keypoints_from_last_range=True` reproduces coco-analyze);
* coco-analyze labels its false-negative curve rows in reverse OKS order; not reproduced.

By default the area ranges are the evaluator's (all = [0, 1e10]) so the baseline equals
`aepose evaluate`; `COCO_ANALYZE_AREA_RANGES` (all = [32^2, 1e10]) gives coco-analyze's.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AnnotationError
from . import cocoeval as ev

ERROR_TYPES: tuple[str, ...] = ("miss", "swap", "inversion", "jitter")
CURVES: tuple[str, ...] = ("baseline", *ERROR_TYPES, "score", "background_fp", "false_negative")
LABELS: tuple[str, ...] = ("good", "jitter", "inversion", "swap", "miss")
COCO_ANALYZE_AREA_RANGES: tuple[tuple[str, float, float], ...] = (
    ("all", 32.0**2, 1e5**2),
    ("medium", 32.0**2, 96.0**2),
    ("large", 96.0**2, 1e5**2),
)
SIZE_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("32-64 px", 32.0**2, 64.0**2),
    ("64-96 px", 64.0**2, 96.0**2),
    ("96-128 px", 96.0**2, 128.0**2),
    (">128 px", 128.0**2, 1e5**2),
)
OVERLAP_BUCKETS: tuple[tuple[str, int, int], ...] = (("0", 0, 0), ("1-2", 1, 2), (">=3", 3, 10**9))
OVERLAP_IOU = 0.1
_EPS = np.spacing(1)


@dataclass(frozen=True)
class AnalysisParams:
    """The knobs of the analysis; the defaults are the paper's and coco-analyze's."""

    area_ranges: tuple[tuple[str, float, float], ...] = ev.AREA_RANGES
    localization_oks: float = 0.1
    jitter_band: tuple[float, float] = (0.5, 0.85)
    max_dets: int = 20
    soft_nms_keypoints_from_last_range: bool = False


@dataclass(frozen=True)
class _Data:
    gts: Any  # cocoeval.GroundTruth
    dts: Any  # cocoeval.Detections
    variances: np.ndarray
    flip: np.ndarray
    gt_row_of_id: dict
    gt_first: np.ndarray  # [D] first GT row of the detection's group
    gt_count: np.ndarray  # [D] GT rows in the detection's group


def analyze_keypoints(
    annotations: Mapping[str, Any] | str | Path,
    results: Sequence[Mapping[str, Any]] | str | Path,
    sigmas: Sequence[float] | np.ndarray,
    flip_index: Sequence[int],
    use_area: bool = True,
    params: AnalysisParams = AnalysisParams(),
    *,
    crowd_mode: bool = False,
) -> dict[str, Any]:
    """All numbers of the error diagnosis, as plain JSON-ready data (see `report.py`).
    `crowd_mode`: the ground truth ignored as CrowdPose's evaluation ignores it (`num_keypoints`
    0), so that the baseline curves are the evaluator's.

    Keys: `oks_thresholds`, `recall_thresholds`, `area_ranges`, `error_curves` (per area label
    and curve: `ap` and `recall` per OKS threshold, `precision` [T][R]), `ap_gain` (per area
    and curve: the AP gained over the previous curve, per threshold), `localization` (per area:
    matched detections and per-keypoint counts of each label), `background` (per area:
    background false positives and false negatives per threshold) and `sensitivity` (AP by
    size, by number of labelled keypoints and by number of overlapping people).
    """
    data = _load(annotations, results, sigmas, flip_index, use_area, params.max_dets, crowd_mode)
    thresholds = ev.OKS_THRESHOLDS
    ranges = params.area_ranges
    labels, corrected = _localization(data, params)
    curves: dict[str, dict[str, Any]] = {r[0]: {} for r in ranges}
    background: dict[str, Any] = {}
    base_pr = _pr_table(data, data.dts, ranges)
    for a, (label, *_rest) in enumerate(ranges):
        curves[label]["baseline"] = base_pr[a]
    last_keypoints = _corrected_keypoints(data, labels[-1], corrected[-1], ERROR_TYPES)
    for a, area_range in enumerate(ranges):
        label = area_range[0]
        one = (area_range,)
        for i in range(len(ERROR_TYPES)):
            kpts = _corrected_keypoints(data, labels[a], corrected[a], ERROR_TYPES[: i + 1])
            dts = dataclasses.replace(data.dts, keypoints=kpts)
            curves[label][ERROR_TYPES[i]] = _pr_table(data, dts, one)[0]
        nms_keypoints = last_keypoints if params.soft_nms_keypoints_from_last_range else kpts
        scores = _optimal_scores(data, kpts, nms_keypoints, area_range)
        dts = _reranked(data.dts, kpts, scores)
        curves[label]["score"] = _pr_table(data, dts, one)[0]
        fp, fn_rows, fn_counts = _background(data, dts, area_range)
        curves[label]["background_fp"] = _pr_table(data, dts, one, det_ignore=fp[None])[0]
        curves[label]["false_negative"] = _pr_table(
            data, dts, one, det_ignore=fp[None], gt_removed=fn_rows[None]
        )[0]
        background[label] = {
            "false_positives": [int(n) for n in fp.sum(axis=1)],
            "false_negatives": fn_counts,
        }
    gains = {
        label: {
            name: [
                _gain(per_curve[name]["ap"][t], per_curve[CURVES[i - 1]]["ap"][t])
                for t in range(len(thresholds))
            ]
            for i, name in enumerate(CURVES)
            if i > 0
        }
        for label, per_curve in curves.items()
    }
    return {
        "oks_thresholds": [float(t) for t in thresholds],
        "recall_thresholds": [float(r) for r in ev.RECALL_THRESHOLDS],
        "area_ranges": [[r[0], float(r[1]), float(r[2])] for r in ranges],
        "curves_order": list(CURVES),
        "error_curves": curves,
        "ap_gain": gains,
        "localization": _localization_summary(data, labels, ranges),
        "background": background,
        "sensitivity": _sensitivity(data, ranges[0]),
    }


# --------------------------------------------------------------------------------------------
# Loading


def _load(annotations, results, sigmas, flip_index, use_area: bool, max_dets: int, crowd_mode: bool = False) -> _Data:
    dataset = ev.load_dataset(annotations)
    sigmas_array = np.asarray(sigmas, dtype=np.float64)
    flip = np.asarray(flip_index, dtype=np.int64)
    if sigmas_array.shape != (dataset.num_joints,) or flip.shape != (dataset.num_joints,):
        raise AnnotationError(
            f"{dataset.name}: annotations have K={dataset.num_joints} keypoints but the keypoint "
            f"set has {sigmas_array.size}"
        )
    if len(dataset.category_ids) != 1:
        raise AnnotationError(
            f"{dataset.name}: the error analysis needs exactly one category, found "
            f"{len(dataset.category_ids)}"
        )
    result_list, results_name = ev.load_results(results)
    if not result_list:
        raise AnnotationError(f"{results_name}: no detections to analyse")
    image_index = {image_id: i for i, image_id in enumerate(dataset.image_ids)}
    category_index = {dataset.category_ids[0]: 0}
    gts = ev.ground_truth(dataset, image_index, category_index, use_area, crowd_mode=crowd_mode)
    dts = ev.detections(result_list, results_name, dataset, image_index, category_index, max_dets)
    gt_first = np.searchsorted(gts.group, dts.group, side="left")
    gt_count = np.searchsorted(gts.group, dts.group, side="right") - gt_first
    rows = {int(i): r for r, i in enumerate(gts.ids)}
    return _Data(gts, dts, (sigmas_array * 2) ** 2, flip, rows, gt_first, gt_count)


# --------------------------------------------------------------------------------------------
# Precision / recall


def _pr_table(
    data: _Data,
    dts,
    ranges: Sequence[tuple[str, float, float]],
    det_ignore: np.ndarray | None = None,
    gt_removed: np.ndarray | None = None,
    gts=None,
) -> list[dict[str, Any]]:
    """Per area range: precision [T][R], recall [T] and AP [T] (-1 where no GT), as COCOeval.

    `det_ignore` [A, T, D] marks extra ignored detections, `gt_removed` [A, T] how many
    non-ignored GT to take out of the count (both after matching, as coco-analyze sets them).
    """
    gts = data.gts if gts is None else gts
    matches = _matches(gts, dts, data.variances, ranges, ev.MATCH_THRESHOLDS)
    low = np.array([r[1] for r in ranges])[:, None, None]
    high = np.array([r[2] for r in ranges])[:, None, None]
    outside = (dts.area < low) | (dts.area > high)
    ignored = matches.ignored | ((matches.gt_id < 0) & outside)
    if det_ignore is not None:
        ignored = ignored | det_ignore
    regular = np.count_nonzero(~ev.gt_ignore_by_range(gts, ranges), axis=1)
    order = np.argsort(-dts.score, kind="mergesort")
    num_thr = len(ev.OKS_THRESHOLDS)
    table = []
    for a in range(len(ranges)):
        removed = np.zeros(num_thr, dtype=np.int64) if gt_removed is None else gt_removed[a]
        precision = -np.ones((num_thr, len(ev.RECALL_THRESHOLDS)))
        recall = -np.ones(num_thr)
        for t in range(num_thr):
            num_gt = int(regular[a] - removed[t])
            if num_gt <= 0:
                continue
            p, r = ev.precision_recall(
                matches.gt_id[a, t : t + 1][:, order], ignored[a, t : t + 1][:, order], num_gt
            )
            precision[t], recall[t] = p[0], r[0]
        table.append(
            {
                "ap": [_mean_valid(row) for row in precision],
                "recall": [float(r) for r in recall],
                "precision": precision.tolist(),
            }
        )
    return table


def _matches(gts, dts, variances, ranges, thresholds):
    det_index, gt_index = ev.pair_indices(gts.group, dts.group)
    oks = ev.pair_oks(gts, dts, det_index, gt_index, variances)
    return ev.match(gts, dts, ev.Pairs(det_index, gt_index, oks), ranges, thresholds)


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _gain(after: float, before: float) -> float:
    return -1.0 if after == -1 or before == -1 else after - before


def _reranked(dts, keypoints: np.ndarray, scores: np.ndarray):
    """Detections with new keypoints and scores, re-ranked in their images (file order ties)."""
    order = np.lexsort((dts.source, -scores, dts.group))
    group = dts.group[order]
    starts = np.searchsorted(group, group, side="left")
    return ev.Detections(
        group=group,
        rank=np.arange(len(order)) - starts,
        keypoints=keypoints[order],
        score=scores[order],
        area=dts.area[order],
        source=dts.source[order],
    )


# --------------------------------------------------------------------------------------------
# Localization errors


def _localization(data: _Data, params: AnalysisParams) -> tuple[list[dict], list[np.ndarray]]:
    """Per area range: the label masks {label: [D, K] bool} and corrected x, y [D, K, 2].

    `matched_gt` is the GT row of each analysed detection (-1: none, or a GT without labelled
    keypoints, which cannot be analysed), `any_match` whether it matched any GT at all.
    """
    gts, dts = data.gts, data.dts
    matches = _matches(
        gts, dts, data.variances, params.area_ranges, np.array([params.localization_oks])
    )
    labelled = np.count_nonzero(gts.keypoints[:, :, 2] > 0, axis=1)
    all_labels, all_corrected = [], []
    for a in range(len(params.area_ranges)):
        labels = {name: np.zeros(dts.keypoints.shape[:2], dtype=bool) for name in LABELS}
        labels["matched_gt"] = np.full(len(dts.group), -1, dtype=np.int64)
        labels["any_match"] = matches.gt_id[a, 0] >= 0
        corrected = dts.keypoints[:, :, :2].copy()
        for d in np.flatnonzero(labels["any_match"]):
            g = data.gt_row_of_id[int(matches.gt_id[a, 0, d])]
            if labelled[g] == 0:
                continue
            rows = np.arange(data.gt_first[d], data.gt_first[d] + data.gt_count[d])
            rows = np.concatenate(([g], rows[rows != g]))
            flags, corrected[d] = _classify(dts.keypoints[d], rows, gts, data, params.jitter_band)
            for name, mask in flags.items():
                labels[name][d] = mask
            labels["matched_gt"][d] = g
        all_labels.append(labels)
        all_corrected.append(corrected)
    return all_labels, all_corrected


def _classify(det: np.ndarray, rows: np.ndarray, gts, data: _Data, band) -> tuple[dict, np.ndarray]:
    """Labels of one detection's keypoints against the people `rows` (matched person first)."""
    low, high = band
    people = gts.keypoints[rows]
    candidates = np.concatenate([people, people[:, data.flip, :]])  # own, then mirrored
    area = np.concatenate([gts.oks_area[rows], gts.oks_area[rows]])
    squared = (candidates[:, :, 0] - det[None, :, 0]) ** 2 + (candidates[:, :, 1] - det[None, :, 1]) ** 2
    ks = np.exp(-squared / data.variances / (area[:, None] + _EPS) / 2)
    ks = np.where(candidates[:, :, 2] > 0, ks, -1.0)
    best = ks.max(axis=0)
    best[best < 0] = 0
    where = ks.argmax(axis=0)
    mirrored = len(rows)
    labelled = people[0, :, 2] != 0
    flags = {
        "good": (best > high) & (where == 0) & labelled,
        "jitter": (best >= low) & (best < high) & (where == 0) & labelled,
        "inversion": (best >= low) & (where == mirrored) & labelled,
        "swap": (best >= low) & (where != 0) & (where != mirrored) & labelled,
        "miss": (best < low) & labelled,
    }
    # coco-analyze's correction (see the module docstring): distances along x only.
    gt_area = gts.oks_area[rows[0]]
    sigma2 = data.variances / 4  # sigma^2 exactly: the factors are powers of two
    to_low = np.sqrt(-np.log(low) * 2 * gt_area * sigma2)
    to_high = np.sqrt(-np.log(high) * 2 * gt_area * sigma2)
    rounded = best + _EPS * (best == 0) - _EPS * (best == 1)
    to_best = np.sqrt(-np.log(rounded) * 2 * gt_area * sigma2)
    gx, gy = people[0, :, 0], people[0, :, 1]
    f = {k: v.astype(np.float64) for k, v in flags.items()}
    unlabelled = (~labelled).astype(np.float64)
    x = (
        det[:, 0] * f["good"] + (gx + to_high) * f["jitter"] + (gx + to_low) * f["miss"]
        + det[:, 0] * unlabelled + (gx + to_best) * f["inversion"] + (gx + to_best) * f["swap"]
    )
    y = (
        det[:, 1] * f["good"] + gy * f["jitter"] + gy * f["miss"] + det[:, 1] * unlabelled
        + gy * f["inversion"] + gy * f["swap"]
    )
    return flags, np.stack([x, y], axis=1)


def _corrected_keypoints(data: _Data, labels: dict, corrected: np.ndarray, types) -> np.ndarray:
    mask = np.zeros(data.dts.keypoints.shape[:2], dtype=bool)
    for name in types:
        mask |= labels[name]
    kpts = data.dts.keypoints.copy()
    kpts[:, :, :2] = np.where(mask[:, :, None], corrected, kpts[:, :, :2])
    return kpts


def _localization_summary(data: _Data, labels: list[dict], ranges) -> dict[str, Any]:
    summary = {}
    for (label, *_rest), per in zip(ranges, labels):
        matched = per["matched_gt"] >= 0
        counts = {name: per[name][matched].sum(axis=0).astype(int).tolist() for name in LABELS}
        gt_rows = per["matched_gt"][matched]
        labelled = (data.gts.keypoints[gt_rows, :, 2] > 0).sum(axis=0).astype(int).tolist()
        summary[label] = {
            "matched": int(np.count_nonzero(per["any_match"])),
            "analysed": int(matched.sum()),
            "labelled_keypoints": labelled,
            "keypoints": counts,
            "totals": {name: int(sum(v)) for name, v in counts.items()},
        }
    return summary


# --------------------------------------------------------------------------------------------
# Scoring and background errors


def _optimal_scores(data: _Data, kpts: np.ndarray, nms_kpts: np.ndarray, area_range) -> np.ndarray:
    """Best OKS with a non-ignored GT (range `area_range`), then soft-NMS within each image."""
    gts = data.gts
    dts = dataclasses.replace(data.dts, keypoints=kpts)
    det_index, gt_index = ev.pair_indices(gts.group, dts.group)
    oks = ev.pair_oks(gts, dts, det_index, gt_index, data.variances)
    ignored = ev.gt_ignore_by_range(gts, (area_range,))[0]
    usable = ~ignored[gt_index]
    best = np.zeros(len(dts.group))
    np.maximum.at(best, det_index[usable], oks[usable])
    scores = best.copy()
    for group in np.unique(dts.group):
        members = np.flatnonzero(dts.group == group)
        members = members[np.argsort(dts.source[members], kind="stable")]  # file order
        scores[members] = _soft_nms(nms_kpts[members], best[members], data.variances)
    return scores


def _soft_nms(kpts: np.ndarray, scores: np.ndarray, variances: np.ndarray) -> np.ndarray:
    """Gaussian soft-NMS on OKS (sigma^2 = .5), keypoint-box areas, as coco-analyze runs it."""
    score = [float(s) for s in scores]
    x, y = kpts[:, :, 0], kpts[:, :, 1]
    area = (x.max(axis=1) - x.min(axis=1)) * (y.max(axis=1) - y.min(axis=1))
    pending = list(range(len(score)))
    while pending:
        pending.sort(key=lambda i: -score[i])
        m = pending.pop(0)
        for i in pending:
            e = ((x[i] - x[m]) ** 2 + (y[i] - y[m]) ** 2) / variances / ((0.5 * (area[m] + area[i])) + _EPS) / 2
            similarity = np.sum(np.exp(-e)) / e.shape[0]
            score[i] = score[i] * np.exp(-((similarity**2) / 0.5))
    return np.array(score)


def _background(data: _Data, dts, area_range) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Background FPs [T, D] (no GT at that OKS), GT removed per threshold [T], FN counts [T].

    A GT unmatched at an OKS threshold counts as a false negative from that threshold up
    (coco-analyze accumulates the ignore flags from the lowest threshold).
    """
    gts = data.gts
    matches = _matches(gts, dts, data.variances, (area_range,), ev.MATCH_THRESHOLDS)
    false_pos = matches.gt_id[0] < 0
    regular = ~ev.gt_ignore_by_range(gts, (area_range,))[0]
    unmatched_so_far = np.zeros(len(gts.group), dtype=bool)
    removed, counts = [], []
    for t in range(len(ev.OKS_THRESHOLDS)):
        matched = np.zeros(len(gts.group), dtype=bool)
        ids = matches.gt_id[0, t]
        matched[[data.gt_row_of_id[int(i)] for i in ids[ids >= 0]]] = True
        counts.append(int(np.count_nonzero(~matched & regular)))
        unmatched_so_far |= ~matched
        removed.append(int(np.count_nonzero(unmatched_so_far & regular)))
    return false_pos, np.array(removed), counts


# --------------------------------------------------------------------------------------------
# Sensitivity


def _sensitivity(data: _Data, main_range) -> dict[str, Any]:
    """AP (.5, .75, mean) by GT size, number of labelled keypoints and overlapping people."""
    gts = data.gts
    out: dict[str, Any] = {}
    size = _pr_table(data, data.dts, SIZE_BUCKETS)
    regular = ~ev.gt_ignore_by_range(gts, SIZE_BUCKETS)
    out["size"] = [
        {"label": b[0], "low": b[1], "high": b[2], "num_gt": int(regular[i].sum()), **_ap_summary(size[i])}
        for i, b in enumerate(SIZE_BUCKETS)
    ]
    k = gts.keypoints.shape[1]
    labelled = np.count_nonzero(gts.keypoints[:, :, 2] > 0, axis=1)
    edges = sorted({max(1, round(k * f)) for f in (5 / 17, 10 / 17, 15 / 17)})
    bounds = [1, *[e + 1 for e in edges], k + 1]
    kp_buckets = [(f"{lo}-{hi - 1}", lo, hi - 1) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    out["visible_keypoints"] = [
        _bucket_ap(data, main_range, (labelled >= lo) & (labelled <= hi), label, lo, hi)
        for label, lo, hi in kp_buckets
    ]
    overlaps = _overlap_counts(gts)
    out["overlaps"] = [
        _bucket_ap(data, main_range, (overlaps >= lo) & (overlaps <= hi), label, lo, hi)
        for label, lo, hi in OVERLAP_BUCKETS
    ]
    return out


def _bucket_ap(data: _Data, main_range, member: np.ndarray, label: str, lo: int, hi: int) -> dict:
    gts = dataclasses.replace(data.gts, ignore=data.gts.ignore | ~member)
    table = _pr_table(data, data.dts, (main_range,), gts=gts)[0]
    num_gt = int(np.count_nonzero(~ev.gt_ignore_by_range(gts, (main_range,))[0]))
    return {"label": label, "low": lo, "high": min(hi, 10**6), "num_gt": num_gt, **_ap_summary(table)}


def _ap_summary(table: dict) -> dict[str, float]:
    thresholds = list(ev.OKS_THRESHOLDS)
    precision = np.array(table["precision"])
    return {
        "ap": _mean_valid(precision),
        "ap50": table["ap"][thresholds.index(0.5)],
        "ap75": table["ap"][[round(t, 2) for t in thresholds].index(0.75)],
    }


def _overlap_counts(gts) -> np.ndarray:
    """Per GT: how many other annotations of its image overlap its box with IoU > .1."""
    counts = np.zeros(len(gts.group), dtype=np.int64)
    for group in np.unique(gts.group):
        rows = np.flatnonzero(gts.group == group)
        box = gts.bbox[rows]
        x0, y0 = box[:, 0], box[:, 1]
        x1, y1 = x0 + box[:, 2], y0 + box[:, 3]
        iw = np.clip(np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None]), 0, None)
        ih = np.clip(np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None]), 0, None)
        inter = iw * ih
        union = (box[:, 2] * box[:, 3])[:, None] + (box[:, 2] * box[:, 3])[None] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
        np.fill_diagonal(iou, 0)
        counts[rows] = np.count_nonzero(iou > OVERLAP_IOU, axis=1)
    return counts
