"""COCO keypoint evaluation (OKS AP/AR) and OKS-NMS, number for number as the reference.

The reference scores result files with `xtcocotools.cocoeval.COCOeval(gt, dt, 'keypoints',
sigmas, use_area)` (xtcocotools 1.14.3, maxDets 20, as mmpose 0.29's `BottomUpCocoDataset._do_python_keypoint_eval` calls it). This module is an independent,
vectorised re-implementation of that evaluator: it does not import pycocotools or xtcocotools,
yet it reproduces their ten summary numbers exactly (to the last bit on the golden cases).
Every detail that can move a number is replicated on purpose:

* `loadRes`: detection ids follow the file order; the detection area comes from the *first*
  result's layout (a non-empty `bbox` -> `w * h` of each result's own bbox, otherwise the
  keypoints' bounding box over all K joints, whatever their scores);
* detections whose keypoint scores are all <= 0 are dropped, as are those of unknown categories;
* a ground truth is ignored if it is a crowd or has no labelled keypoint (v > 0);
* OKS divides by the annotated `area` (use_area) or by `0.53 * w * h` of the GT box, which then
  also decides the medium/large ranges; GT without labelled keypoints measure the distance to
  their box expanded by its size on every side; the OKS mean is summed in numpy's order;
* per image the detections are ranked by a stable (mergesort) score sort and cut to maxDets;
* greedy matching per OKS threshold (`min(t, 1 - 1e-10)`), non-ignored GT first, ties going
  to the later GT, crowds matchable many times, unmatched detections outside the area range
  ignored;
* the precision envelope, recall thresholds by `searchsorted(..., 'left')`, -1 where a
  category/area has no non-ignored GT, and means over the entries > -1.

The matching loop, which is sequential over the (at most 20) ranks of an image, runs for all
images, area ranges and thresholds at once, so the cost is a few dozen numpy calls instead of
a Python loop per detection and GT.

CrowdPose (`mode="keypoints_crowd"`, as mmpose 0.29's `BottomUpCrowdPoseDataset` calls
xtcocotools with `use_area=False`) differs in three places, reproduced as well:

* a ground truth is ignored when its `num_keypoints` is 0 (CrowdPose counts only visible
  joints there), not when it has no labelled keypoint; the OKS still averages over v > 0;
* nine numbers (`CROWD_METRIC_NAMES`): AP, AP .5, AP .75, AR, AR .5, AR .75 over all people
  (no medium/large), then AP of the easy, medium and hard images: those whose `crowdIndex` is
  below 0.2, below 0.8, and the rest, each evaluated on its own;
* those three are the mean of the whole precision array of the subset (entries of -1 included,
  -1 when the subset has no person to find), rounded to 4 decimals.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AnnotationError
from .cocofiles import check_annotations, check_results, load_results, read_json

METRIC_NAMES: tuple[str, ...] = (
    "AP",
    "AP .5",
    "AP .75",
    "AP (M)",
    "AP (L)",
    "AR",
    "AR .5",
    "AR .75",
    "AR (M)",
    "AR (L)",
)

# Built exactly as xtcocotools builds them: the thresholds are compared with `==` when the
# summary picks AP .5 / AP .75, so their float values matter.
_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
_RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
# Matching accepts an OKS >= min(t, 1 - 1e-10) (a no-op for 0.5..0.95, kept for fidelity).
MATCH_THRESHOLDS = np.minimum(_IOU_THRESHOLDS, 1 - 1e-10)
# (label, low, high): "all", "medium" and "large" as xtcocotools' keypoint parameters.
_AREA_RANGES: tuple[tuple[str, float, float], ...] = (
    ("all", 0.0, 1e5**2),
    ("medium", 32.0**2, 96.0**2),
    ("large", 96.0**2, 1e5**2),
)
# (is AP, OKS threshold or None for the mean over all, area label) per summary number.
_SUMMARY: tuple[tuple[bool, float | None, str], ...] = (
    (True, None, "all"),
    (True, 0.5, "all"),
    (True, 0.75, "all"),
    (True, None, "medium"),
    (True, None, "large"),
    (False, None, "all"),
    (False, 0.5, "all"),
    (False, 0.75, "all"),
    (False, None, "medium"),
    (False, None, "large"),
)
_EPS = np.spacing(1)
# CrowdPose's summary (xtcocotools' `_summarizeKps_crowd`), named as mmpose 0.29 names them.
CROWD_METRIC_NAMES: tuple[str, ...] = ("AP", "AP .5", "AP .75", "AR", "AR .5", "AR .75", "AP(E)", "AP(M)", "AP(H)")
# Crowd index bounds of the easy / medium / hard images (`get_type_result(first=0.2, second=0.8)`).
CROWD_INDEX_BOUNDS = (0.2, 0.8)
MODES = ("keypoints", "keypoints_crowd")


@dataclass(frozen=True)
class GroundTruth:
    """Evaluated GT annotations, in xtcocotools' order (image id ascending, then file order)."""

    group: np.ndarray  # [G] index of the (category, image) group
    ids: np.ndarray  # [G] annotation ids (stored in matches, as the reference does)
    keypoints: np.ndarray  # [G, K, 3]
    bbox: np.ndarray  # [G, 4]
    oks_area: np.ndarray  # [G] denominator area of the OKS
    range_area: np.ndarray  # [G] area compared with the medium/large ranges
    crowd: np.ndarray  # [G] bool: may be matched by several detections
    ignore: np.ndarray  # [G] bool: crowd or no labelled keypoint


@dataclass(frozen=True)
class Detections:
    """Detections kept for evaluation: top `max_dets` per group, by group then rank."""

    group: np.ndarray  # [D]
    rank: np.ndarray  # [D] position in its group's stable score order
    keypoints: np.ndarray  # [D, K, 3]
    score: np.ndarray  # [D]
    area: np.ndarray  # [D] as loadRes sets it
    source: np.ndarray  # [D] index of the detection in the results list


@dataclass(frozen=True)
class Dataset:
    """What the annotation file contributes: sorted image and category ids and raw annotations."""

    name: str
    image_ids: list[Any]
    category_ids: list[Any]
    annotations: list[dict]
    num_joints: int
    # Each image's `crowdIndex` (CrowdPose), by image id; None where the file gives none.
    crowd_index: dict[Any, float] | None = None


# --------------------------------------------------------------------------------------------
# Public API


def evaluate_keypoints(
    annotations: Mapping[str, Any] | str | Path,
    results: Sequence[Mapping[str, Any]] | str | Path,
    sigmas: Sequence[float] | np.ndarray,
    use_area: bool = True,
    max_dets: int = 20,
    *,
    annotations_name: str | None = None,
    results_name: str | None = None,
    mode: str = "keypoints",
) -> dict[str, float]:
    """Score keypoint `results` against COCO-style `annotations` exactly as the reference does.

    `annotations_name` / `results_name` name in-memory inputs in error messages (files are
    named by their path). `mode`: xtcocotools' `keypoints` (COCO, AIC, MHP: the ten
    `METRIC_NAMES`) or `keypoints_crowd` (CrowdPose: the nine `CROWD_METRIC_NAMES`; the
    annotations need `num_keypoints` and the images `crowdIndex`).

    `annotations` is a COCO dataset (dict or JSON path); `results` is a COCO results list (list
    or JSON path) of `{image_id, category_id, keypoints, score[, bbox]}`. Returns the metrics
    keyed by their names, in order, -1.0 where no GT falls in a range. An empty results list
    scores 0 everywhere, as mmpose's evaluation reports it without calling the evaluator.
    """
    return evaluate_keypoints_detailed(
        annotations, results, sigmas, use_area, max_dets,
        annotations_name=annotations_name, results_name=results_name, mode=mode,
    ).metrics


def evaluate_keypoints_detailed(
    annotations: Mapping[str, Any] | str | Path,
    results: Sequence[Mapping[str, Any]] | str | Path,
    sigmas: Sequence[float] | np.ndarray,
    use_area: bool = True,
    max_dets: int = 20,
    *,
    annotations_name: str | None = None,
    results_name: str | None = None,
    mode: str = "keypoints",
) -> Evaluation:
    """`evaluate_keypoints` that also returns the accumulated precision and recall arrays."""
    if max_dets < 1:
        raise ValueError(f"max_dets must be at least 1, got {max_dets}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    try:
        return _evaluate(annotations, results, sigmas, use_area, max_dets, annotations_name, results_name, mode)
    except (TypeError, KeyError, ValueError, IndexError, AttributeError):
        # In-memory inputs are not checked up front (files are, when read: see `load_annotations`,
        # `load_results`); when they break the evaluation, the checks say where.
        if not isinstance(annotations, (str, Path)):
            check_annotations(annotations, annotations_name or "<annotations>")
        if not isinstance(results, (str, Path)):
            check_results(results, results_name or "<results>")
        raise


def _evaluate(annotations, results, sigmas, use_area, max_dets, annotations_name, results_name, mode="keypoints") -> Evaluation:
    dataset = load_dataset(annotations, annotations_name)
    sigmas_array = np.asarray(sigmas, dtype=np.float64)
    if sigmas_array.shape != (dataset.num_joints,):
        raise AnnotationError(
            f"{dataset.name}: annotations have K={dataset.num_joints} keypoints but "
            f"{sigmas_array.size} sigmas were given"
        )
    return _evaluate_loaded(dataset, results, sigmas_array, use_area, max_dets, results_name, mode)


@dataclass(frozen=True)
class Evaluation:
    """The metrics (COCO's ten, CrowdPose's nine) and the accumulated arrays of all images they
    were summarised from.

    `precision` is [T, R, C, A] (OKS thresholds `OKS_THRESHOLDS`, recall thresholds
    `RECALL_THRESHOLDS`, categories, area ranges `AREA_RANGES`), `recall` [T, C, A]; -1 where a
    category/range has no GT, as COCOeval's `eval['precision']` without the maxDets axis.
    Both are None for an empty results list (all metrics 0).
    """

    metrics: dict[str, float]
    precision: np.ndarray | None
    recall: np.ndarray | None


OKS_THRESHOLDS = _IOU_THRESHOLDS
RECALL_THRESHOLDS = _RECALL_THRESHOLDS
AREA_RANGES = _AREA_RANGES


def _evaluate_loaded(
    dataset: Dataset,
    results: Sequence[Mapping[str, Any]] | str | Path,
    sigmas: np.ndarray,
    use_area: bool,
    max_dets: int,
    results_name: str | None = None,
    mode: str = "keypoints",
) -> Evaluation:
    """`evaluate_keypoints` on a loaded dataset, keeping the precision and recall arrays."""
    crowd = mode == "keypoints_crowd"
    names = CROWD_METRIC_NAMES if crowd else METRIC_NAMES
    if crowd:
        _check_crowd_dataset(dataset)
    if isinstance(results, (str, Path)):
        result_list, results_name = load_results(results, results_name)
    else:
        result_list, results_name = results, results_name or "<results>"
        if not isinstance(result_list, list):
            raise AnnotationError(f"{results_name}: results must be a list of detections")
    if not result_list:
        return Evaluation({name: 0.0 for name in names}, None, None)
    image_index = {image_id: i for i, image_id in enumerate(dataset.image_ids)}
    category_index = {cat_id: i for i, cat_id in enumerate(dataset.category_ids)}
    num_images = len(dataset.image_ids)
    gts = ground_truth(dataset, image_index, category_index, use_area, crowd_mode=crowd)
    dts = detections(result_list, results_name, dataset, image_index, category_index, max_dets)
    precision, recall = _accumulate(gts, dts, sigmas, len(category_index), num_images)
    if not crowd:
        return Evaluation(_summarize(precision, recall), precision, recall)
    metrics = _summarize_crowd(precision, recall)
    for name, images in zip(CROWD_METRIC_NAMES[6:], _crowd_classes(dataset)):
        metrics[name] = _subset_ap(gts, dts, sigmas, len(category_index), num_images, [image_index[i] for i in images])
    return Evaluation(metrics, precision, recall)


def _check_crowd_dataset(dataset: Dataset) -> None:
    if dataset.crowd_index is None or len(dataset.crowd_index) != len(dataset.image_ids):
        raise AnnotationError(f"{dataset.name}: CrowdPose evaluation needs every image's 'crowdIndex'")


def _crowd_classes(dataset: Dataset) -> tuple[list, list, list]:
    """Image ids of the easy, medium and hard images, in file order (xtcocotools' `split`)."""
    first, second = CROWD_INDEX_BOUNDS
    easy, medium, hard = [], [], []
    for image_id, index in dataset.crowd_index.items():  # type: ignore[union-attr]
        (easy if index < first else medium if index < second else hard).append(image_id)
    return easy, medium, hard


def _subset_ap(
    gts: GroundTruth, dts: Detections, sigmas: np.ndarray, num_categories: int, num_images: int, images: list[int]
) -> float:
    """AP of the images `images` (indices) evaluated alone, as `get_type_result` reports it: the
    mean of the whole precision array of area 'all', -1 entries included, rounded to 4 places."""
    keep = np.zeros(num_images, dtype=bool)
    keep[images] = True
    gt_rows = keep[gts.group % num_images]
    dt_rows = keep[dts.group % num_images]
    sub_gts = GroundTruth(*(getattr(gts, f)[gt_rows] for f in GroundTruth.__dataclass_fields__))
    sub_dts = Detections(*(getattr(dts, f)[dt_rows] for f in Detections.__dataclass_fields__))
    precision, _ = _accumulate(sub_gts, sub_dts, sigmas, num_categories, num_images)
    return float(np.round(np.mean(precision[:, :, :, 0]), 4))


# --------------------------------------------------------------------------------------------
# Loading


def load_dataset(source: Any, name: str | None = None) -> Dataset:
    """Read a COCO keypoint dataset; check it has images, categories and keypoints."""
    data, default_name = read_json(source, "annotations")
    name = name or default_name
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise AnnotationError(f"{name}: not a COCO annotation file (no 'annotations' list)")
    if isinstance(source, (str, Path)):
        check_annotations(data, name)
    annotations = data["annotations"]
    lengths = {len(a["keypoints"]) for a in annotations if isinstance(a, dict) and "keypoints" in a}
    if not lengths:
        raise AnnotationError(f"{name}: no annotation has keypoints")
    if len(lengths) > 1 or min(lengths) % 3:
        raise AnnotationError(
            f"{name}: keypoint lists of different or invalid lengths {sorted(lengths)}"
        )
    try:
        image_ids = sorted({image["id"] for image in data.get("images", [])})
        category_ids = sorted({cat["id"] for cat in data.get("categories", [])})
    except (KeyError, TypeError) as err:
        raise AnnotationError(f"{name}: an image or category entry has no usable 'id'") from err
    if not image_ids or not category_ids:
        raise AnnotationError(f"{name}: no 'images' or no 'categories' to evaluate against")
    return Dataset(name, image_ids, category_ids, annotations, lengths.pop() // 3, _crowd_indices(data, name))


def _crowd_indices(data: dict, name: str) -> dict[Any, float] | None:
    """Each image's `crowdIndex` by id (file order), or None when any image lacks a number there."""
    indices: dict[Any, float] = {}
    for image in data.get("images", []):
        value = image.get("crowdIndex") if isinstance(image, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        indices[image["id"]] = float(value)
    return indices


def _selected_annotations(dataset: Dataset, category_index: Mapping[Any, int]) -> list[dict]:
    """GT in xtcocotools' order: by ascending image id, file order within an image.

    Like `COCO.loadAnns`, an id that occurs twice resolves to the last annotation with it.
    """
    by_image: dict[Any, list[dict]] = {}
    last_with_id: dict[Any, dict] = {}
    for ann in dataset.annotations:
        try:
            by_image.setdefault(ann["image_id"], []).append(ann)
            last_with_id[ann["id"]] = ann
        except (KeyError, TypeError) as err:
            raise AnnotationError(
                f"{dataset.name}: an annotation lacks 'image_id' or 'id'"
            ) from err
    return [
        last_with_id[ann["id"]]
        for image_id in dataset.image_ids
        for ann in by_image.get(image_id, [])
        if ann.get("category_id") in category_index
    ]


def ground_truth(
    dataset: Dataset,
    image_index: Mapping[Any, int],
    category_index: Mapping[Any, int],
    use_area: bool,
    *,
    crowd_mode: bool = False,
) -> GroundTruth:
    """Arrays of the evaluated GT, with ignore flags and the two areas xtcocotools uses
    (`crowd_mode`: a GT without keypoints is one whose `num_keypoints` is 0, CrowdPose's rule)."""
    anns = _selected_annotations(dataset, category_index)
    k = dataset.num_joints
    try:
        keypoints = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(-1, k, 3)
        bbox = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        ids = np.array([a["id"] for a in anns], dtype=np.int64)
    except (KeyError, ValueError, TypeError) as err:
        raise AnnotationError(
            f"{dataset.name}: every person annotation needs an integer 'id', 'bbox' and "
            f"{3 * k} keypoint values ({err!r})"
        ) from err
    box_area = bbox[:, 2] * bbox[:, 3] * 0.53
    has_area = np.array(["area" in a for a in anns], dtype=bool)
    annotated_area = np.array([a.get("area", np.nan) for a in anns], dtype=np.float64)
    if use_area and not has_area.all():
        raise AnnotationError(f"{dataset.name}: annotations without 'area' need use_area=False")
    oks_area = annotated_area if use_area else bbox[:, 3] * bbox[:, 2] * 0.53
    range_area = np.where(has_area & use_area, annotated_area, box_area)
    crowd = np.array([bool(a.get("iscrowd", False)) for a in anns], dtype=bool)
    labelled = np.count_nonzero(keypoints[:, :, 2] > 0, axis=1)
    if crowd_mode:
        try:
            labelled = np.array([a["num_keypoints"] for a in anns], dtype=np.float64).reshape(-1)
        except (KeyError, TypeError, ValueError) as err:
            raise AnnotationError(f"{dataset.name}: CrowdPose evaluation needs every annotation's 'num_keypoints' ({err!r})") from err
    groups = np.array(
        [
            category_index[a["category_id"]] * len(image_index) + image_index[a["image_id"]]
            for a in anns
        ],
        dtype=np.int64,
    )
    order = np.argsort(groups, kind="stable")
    return GroundTruth(
        group=groups[order],
        ids=ids[order],
        keypoints=keypoints[order],
        bbox=bbox[order],
        oks_area=oks_area[order],
        range_area=range_area[order],
        crowd=crowd[order],
        ignore=(crowd | (labelled == 0))[order],
    )


def detections(
    results: list,
    name: str,
    dataset: Dataset,
    image_index: Mapping[Any, int],
    category_index: Mapping[Any, int],
    max_dets: int,
) -> Detections:
    """Detections as xtcocotools loads, filters, ranks and truncates them."""
    k = dataset.num_joints
    try:
        image_ids = [r["image_id"] for r in results]
        category_ids = [r["category_id"] for r in results]
        flat = [r["keypoints"] for r in results]
        scores = np.array([r["score"] for r in results], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as err:
        raise AnnotationError(
            f"{name}: every result needs 'image_id', 'category_id', 'keypoints' and 'score'"
        ) from err
    _check_image_ids(image_ids, image_index, name, dataset.name)
    _check_keypoint_count(flat, k, name, dataset.name)
    # fromiter over the chained lists parses twice as fast as np.array on nested lists.
    values = itertools.chain.from_iterable(flat)
    try:
        keypoints = np.fromiter(values, np.float64, count=3 * k * len(flat)).reshape(-1, k, 3)
    except (TypeError, ValueError) as err:
        raise AnnotationError(f"{name}: keypoints must be numbers ({err})") from err
    if not (np.isfinite(keypoints).all() and np.isfinite(scores).all()):
        raise AnnotationError(f"{name}: results contain NaN or infinite keypoints or scores")
    area = _result_areas(results, keypoints, name)
    known = np.array([c in category_index for c in category_ids], dtype=bool)
    scored = np.count_nonzero(keypoints[:, :, 2] > 0, axis=1) > 0
    kept = np.flatnonzero(known & scored)
    groups = np.array(
        [
            category_index[category_ids[i]] * len(image_index) + image_index[image_ids[i]]
            for i in kept
        ],
        dtype=np.int64,
    )
    # Stable by score within a group, file order breaking ties (xtcocotools' mergesort).
    order = np.lexsort((kept, -scores[kept], groups))
    sorted_groups = groups[order]
    starts = np.searchsorted(sorted_groups, sorted_groups, side="left")
    rank = np.arange(len(order)) - starts
    top = rank < max_dets
    chosen = kept[order[top]]
    return Detections(
        group=sorted_groups[top],
        rank=rank[top],
        keypoints=keypoints[chosen],
        score=scores[chosen],
        area=area[chosen],
        source=chosen,
    )


def _check_image_ids(
    image_ids: list, image_index: Mapping[Any, int], name: str, gt_name: str
) -> None:
    unknown = sorted({str(i) for i in image_ids if i not in image_index})
    if unknown:
        shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise AnnotationError(
            f"{name}: {len(unknown)} image id(s) not in the annotations {gt_name}: {shown}"
        )


def _check_keypoint_count(flat: list, k: int, name: str, gt_name: str) -> None:
    try:
        lengths = {len(v) for v in flat}
    except TypeError as err:
        raise AnnotationError(f"{name}: 'keypoints' must be lists of numbers") from err
    if lengths != {3 * k}:
        found = ", ".join(f"K={n / 3:g}" for n in sorted(lengths))
        raise AnnotationError(
            f"{name}: results have {found} keypoints per person but the annotations "
            f"{gt_name} have K={k}"
        )


def _result_areas(results: list, keypoints: np.ndarray, name: str) -> np.ndarray:
    """Detection areas as `COCO.loadRes` sets them; which rule applies depends on result 0."""
    first = results[0]
    if "bbox" in first and first["bbox"] != []:
        try:
            return np.array([r["bbox"][2] * r["bbox"][3] for r in results], dtype=np.float64)
        except (KeyError, IndexError, TypeError) as err:
            raise AnnotationError(
                f"{name}: the first result has a 'bbox', so all need one"
            ) from err
    if "segmentation" in first:
        raise AnnotationError(f"{name}: segmentation results are not supported, only keypoints")
    x, y = keypoints[:, :, 0], keypoints[:, :, 1]
    return (x.max(axis=1) - x.min(axis=1)) * (y.max(axis=1) - y.min(axis=1))


# --------------------------------------------------------------------------------------------
# OKS


def pair_indices(gt_group: np.ndarray, det_group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (detection, GT) pair sharing a group, detection-major, GT in their stored order."""
    first_gt = np.searchsorted(gt_group, det_group, side="left")
    count = np.searchsorted(gt_group, det_group, side="right") - first_gt
    det_index = np.repeat(np.arange(len(det_group)), count)
    pair_start = np.repeat(np.cumsum(count) - count, count)
    gt_index = np.repeat(first_gt, count) + np.arange(len(det_index)) - pair_start
    return det_index, gt_index


def pair_oks(
    gts: GroundTruth,
    dts: Detections,
    det_index: np.ndarray,
    gt_index: np.ndarray,
    variances: np.ndarray,
) -> np.ndarray:
    """OKS of each pair, with xtcocotools' float operations in the same order."""
    g = gts.keypoints[gt_index]
    d = dts.keypoints[det_index]
    visible = g[:, :, 2] > 0
    labelled = np.count_nonzero(visible, axis=1)
    box = gts.bbox[gt_index]
    dx = d[:, :, 0] - g[:, :, 0]
    dy = d[:, :, 1] - g[:, :, 1]
    unlabelled = labelled == 0
    if unlabelled.any():
        # Distance to the GT box grown by its width/height on each side.
        x0 = (box[:, 0] - box[:, 2])[:, None]
        x1 = (box[:, 0] + box[:, 2] * 2)[:, None]
        y0 = (box[:, 1] - box[:, 3])[:, None]
        y1 = (box[:, 1] + box[:, 3] * 2)[:, None]
        xd, yd = d[:, :, 0], d[:, :, 1]
        box_dx = np.maximum(0, x0 - xd) + np.maximum(0, xd - x1)
        box_dy = np.maximum(0, y0 - yd) + np.maximum(0, yd - y1)
        dx = np.where(unlabelled[:, None], box_dx, dx)
        dy = np.where(unlabelled[:, None], box_dy, dy)
    area = gts.oks_area[gt_index][:, None]
    similarity = np.exp(-((dx**2 + dy**2) / variances / (area + _EPS) / 2))
    # Unlabelled GT average over all K joints, the others over their labelled ones.
    counted = visible | unlabelled[:, None]
    return _masked_row_means(similarity, counted)


def _masked_row_means(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of each row's masked entries, summed exactly as `np.sum` sums a 1-D array of them.

    numpy's pairwise summation depends on the element count, so rows are gathered into dense
    blocks of equal count; a row sum of a contiguous block equals the 1-D sum bit for bit.
    """
    counts = np.count_nonzero(mask, axis=1)
    means = np.zeros(len(values), dtype=np.float64)
    for n in np.unique(counts):
        rows = np.flatnonzero(counts == n)
        block = values[rows][mask[rows]].reshape(len(rows), n)
        means[rows] = np.sum(block, axis=1) / n
    return means


# --------------------------------------------------------------------------------------------
# Matching


@dataclass(frozen=True)
class Pairs:
    """Every (detection, GT) pair of the same group, with its OKS."""

    det: np.ndarray  # [P] index into Detections
    gt: np.ndarray  # [P] index into GroundTruth
    oks: np.ndarray  # [P]


@dataclass(frozen=True)
class _Matches:
    """Per kept detection, for every area range and OKS threshold: matched GT id (-1) and ignore."""

    gt_id: np.ndarray  # [A, T, D] int64
    ignored: np.ndarray  # [A, T, D] bool


@dataclass(frozen=True)
class _Bucket:
    """Groups padded to the same GT width: dense tables for the rank-by-rank matching."""

    oks: np.ndarray  # [B, R, W] OKS of the rank-r detection with GT column w (-inf: none)
    detection: np.ndarray  # [B, R] index of the rank-r detection, -1 if absent
    exists: np.ndarray  # [B, W] real GT (not padding)
    crowd: np.ndarray  # [B, W]
    ignore: np.ndarray  # [A, B, W] ignored in area range a
    ids: np.ndarray  # [B, W] GT annotation ids


def match(
    gts: GroundTruth,
    dts: Detections,
    pairs: Pairs,
    area_ranges: Sequence[tuple[str, float, float]] = _AREA_RANGES,
    thresholds: np.ndarray = MATCH_THRESHOLDS,
) -> _Matches:
    """Greedy matching of every image at once, rank by rank (sequential only within an image).

    Groups are padded to a power-of-two GT count so that one crowded image does not inflate
    the tables of all the others. `area_ranges` and `thresholds` default to the evaluator's;
    the error analysis (`aepose_cli.evaluation.analysis`) passes its own.
    """
    shape = (len(area_ranges), len(thresholds), len(dts.group))
    gt_id = np.full(shape, -1, dtype=np.int64)
    ignored = np.zeros(shape, dtype=bool)
    groups, group_of_det = np.unique(dts.group, return_inverse=True)
    gt_first = np.searchsorted(gts.group, groups, side="left")
    gt_count = np.searchsorted(gts.group, groups, side="right") - gt_first
    width = np.where(gt_count > 0, 2 ** np.ceil(np.log2(np.maximum(gt_count, 1))), 0).astype(
        np.int64
    )
    gt_ignore = gt_ignore_by_range(gts, area_ranges)
    for pad in np.unique(width[width > 0]):
        members = np.flatnonzero(width == pad)
        bucket = _bucket(
            members, int(pad), gts, dts, pairs, group_of_det, gt_first, gt_count, gt_ignore
        )
        matched, matched_ignored = _greedy_match(bucket, thresholds)  # [A, B, T, R]
        present = np.broadcast_to(bucket.detection[None, :, None, :] >= 0, matched.shape)
        a_idx, b_idx, t_idx, r_idx = np.nonzero(present)
        det = bucket.detection[b_idx, r_idx]
        gt_id[a_idx, t_idx, det] = matched[a_idx, b_idx, t_idx, r_idx]
        ignored[a_idx, t_idx, det] = matched_ignored[a_idx, b_idx, t_idx, r_idx]
    return _Matches(gt_id, ignored)


def gt_ignore_by_range(
    gts: GroundTruth, area_ranges: Sequence[tuple[str, float, float]] = _AREA_RANGES
) -> np.ndarray:
    """[A, G]: ignored GT per area range (ignore flag or area outside the range)."""
    low = np.array([r[1] for r in area_ranges])[:, None]
    high = np.array([r[2] for r in area_ranges])[:, None]
    area = gts.range_area[None, :]
    return gts.ignore[None, :] | (area < low) | (area > high)


def _bucket(
    members: np.ndarray,
    pad: int,
    gts: GroundTruth,
    dts: Detections,
    pairs: Pairs,
    group_of_det: np.ndarray,
    gt_first: np.ndarray,
    gt_count: np.ndarray,
    gt_ignore: np.ndarray,
) -> _Bucket:
    """Dense tables of the groups `members` (indices into the detection groups)."""
    local = np.full(len(gt_first), -1, dtype=np.int64)
    local[members] = np.arange(len(members))
    dets = np.flatnonzero(local[group_of_det] >= 0)
    ranks = int(dts.rank[dets].max()) + 1
    detection = np.full((len(members), ranks), -1, dtype=np.int64)
    detection[local[group_of_det[dets]], dts.rank[dets]] = dets
    column = np.arange(pad)
    exists = column[None, :] < gt_count[members][:, None]
    gt_rows = np.where(exists, gt_first[members][:, None] + column[None, :], 0)
    pair_group = group_of_det[pairs.det]
    inside = local[pair_group] >= 0
    oks = np.full((len(members), ranks, pad), -np.inf)
    oks[
        local[pair_group[inside]],
        dts.rank[pairs.det[inside]],
        pairs.gt[inside] - gt_first[pair_group[inside]],
    ] = pairs.oks[inside]
    return _Bucket(
        oks=oks,
        detection=detection,
        exists=exists,
        crowd=gts.crowd[gt_rows] & exists,
        ignore=gt_ignore[:, gt_rows] & exists[None],
        ids=gts.ids[gt_rows],
    )


def _greedy_match(
    bucket: _Bucket, match_thresholds: np.ndarray = MATCH_THRESHOLDS
) -> tuple[np.ndarray, np.ndarray]:
    """xtcocotools' `evaluateImg` matching for all groups, ranges and thresholds at once.

    Returns the matched GT id (-1 if none) and whether that GT is ignored, [A, B, T, R].
    """
    num_ranges, num_groups, pad = bucket.ignore.shape
    ranks = bucket.detection.shape[1]
    shape = (num_ranges, num_groups, len(match_thresholds))
    matched = np.full((*shape, ranks), -1, dtype=np.int64)
    matched_ignored = np.zeros((*shape, ranks), dtype=bool)
    taken = np.zeros((*shape, pad), dtype=bool)
    thresholds = match_thresholds[None, None, :, None]
    ignore = bucket.ignore[:, :, None, :]
    exists = bucket.exists[None, :, None, :]
    crowd = bucket.crowd[None, :, None, :]
    for rank in range(ranks):
        present = (bucket.detection[:, rank] >= 0)[None, :, None, None]
        similarity = bucket.oks[None, :, rank, None, :]  # [1, B, 1, W]
        candidate = exists & (~taken | crowd) & (similarity >= thresholds) & present
        # Non-ignored GT come first in xtcocotools' order; an ignored one is taken only if
        # no regular GT qualifies. Among qualifiers the best OKS wins, ties to the later GT.
        regular = candidate & ~ignore
        pool = np.where(regular.any(axis=-1, keepdims=True), regular, candidate & ignore)
        scored = np.where(pool, similarity, -np.inf)
        best = pool & (scored == scored.max(axis=-1, keepdims=True))
        choice = pad - 1 - np.argmax(best[..., ::-1], axis=-1)  # [A, B, T]
        a_idx, b_idx, t_idx = np.nonzero(pool.any(axis=-1))
        c_idx = choice[a_idx, b_idx, t_idx]
        taken[a_idx, b_idx, t_idx, c_idx] = True
        matched[a_idx, b_idx, t_idx, rank] = bucket.ids[b_idx, c_idx]
        matched_ignored[a_idx, b_idx, t_idx, rank] = bucket.ignore[a_idx, b_idx, c_idx]
    return matched, matched_ignored


# --------------------------------------------------------------------------------------------
# Accumulation and summary


def _accumulate(
    gts: GroundTruth, dts: Detections, sigmas: np.ndarray, num_categories: int, num_images: int
) -> tuple[np.ndarray, np.ndarray]:
    """Precision [T, R, C, A] and recall [T, C, A], -1 where a category/range has no GT."""
    variances = (sigmas * 2) ** 2
    det_index, gt_index = pair_indices(gts.group, dts.group)
    pairs = Pairs(det_index, gt_index, pair_oks(gts, dts, det_index, gt_index, variances))
    matches = match(gts, dts, pairs)
    low = np.array([r[1] for r in _AREA_RANGES])[:, None, None]
    high = np.array([r[2] for r in _AREA_RANGES])[:, None, None]
    outside = (dts.area < low) | (dts.area > high)  # [A, 1, D]
    det_ignored = matches.ignored | ((matches.gt_id < 0) & outside)
    gt_ignore = gt_ignore_by_range(gts)
    num_thr, num_rec, num_ranges = len(_IOU_THRESHOLDS), len(_RECALL_THRESHOLDS), len(_AREA_RANGES)
    precision = -np.ones((num_thr, num_rec, num_categories, num_ranges))
    recall = -np.ones((num_thr, num_categories, num_ranges))
    det_category = dts.group // num_images
    gt_category = gts.group // num_images
    for category in range(num_categories):
        dets = np.flatnonzero(det_category == category)
        regular = np.count_nonzero(~gt_ignore[:, gt_category == category], axis=1)  # [A]
        order = np.argsort(-dts.score[dets], kind="mergesort")
        for area_index in range(num_ranges):
            if regular[area_index] == 0:
                continue
            matched = matches.gt_id[area_index][:, dets[order]]
            skip = det_ignored[area_index][:, dets[order]]
            p, r = precision_recall(matched, skip, int(regular[area_index]))
            precision[:, :, category, area_index] = p
            recall[:, category, area_index] = r
    return precision, recall


def precision_recall(
    matched_gt: np.ndarray, ignored: np.ndarray, num_gt: int
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolated precision at the recall thresholds [T, R] and final recall [T]."""
    tp_sum = np.cumsum(np.logical_and(matched_gt >= 0, ~ignored), axis=1).astype(np.float64)
    fp_sum = np.cumsum(np.logical_and(matched_gt < 0, ~ignored), axis=1).astype(np.float64)
    num_thr, num_dets = tp_sum.shape
    precision = np.zeros((num_thr, len(_RECALL_THRESHOLDS)))
    if num_dets == 0:
        return precision, np.zeros(num_thr)
    rc = tp_sum / num_gt
    pr = tp_sum / (fp_sum + tp_sum + _EPS)
    envelope = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
    for t in range(num_thr):
        index = np.searchsorted(rc[t], _RECALL_THRESHOLDS, side="left")
        inside = index < num_dets
        precision[t, inside] = envelope[t, index[inside]]
    return precision, rc[:, -1]


def _summarize_crowd(precision: np.ndarray, recall: np.ndarray) -> dict[str, float]:
    """CrowdPose's first six numbers: AP and AR over all people (area 'all'), mean and at OKS
    .5 and .75, from the same arrays as COCO's."""
    coco = _summarize(precision, recall)
    return {name: coco[name] for name in CROWD_METRIC_NAMES[:6]}


def _summarize(precision: np.ndarray, recall: np.ndarray) -> dict[str, float]:
    """The ten numbers: means over the entries > -1, of the same arrays in COCOeval's order."""
    labels = [r[0] for r in _AREA_RANGES]
    metrics = {}
    for name, (is_ap, threshold, area_label) in zip(METRIC_NAMES, _SUMMARY):
        values = (precision if is_ap else recall)[..., labels.index(area_label)]
        if threshold is not None:
            values = values[np.where(threshold == _IOU_THRESHOLDS)[0]]
        valid = values[values > -1]
        metrics[name] = float(np.mean(valid)) if valid.size else -1.0
    return metrics
