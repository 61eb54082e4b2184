"""The keypoint evaluator must give the reference's (xtcocotools 1.14.3) numbers to 1e-12.

Golden metrics come from `../shared/golden`; the inline expectations of the synthetic cases and
of OKS-NMS were recorded once by running xtcocotools' COCOeval and mmpose 0.29's `oks_nms` in a
throwaway venv on exactly the inputs built here (the tests themselves import neither).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from aepose_cli.cli.console import metrics_table
from aepose_cli.errors import AnnotationError
from aepose_cli.evaluation.cocoeval import METRIC_NAMES, evaluate_keypoints
from aepose_cli.keypoints import AIC, COCO
from aepose_cli.oks import oks_nms

from paths import SHARED, needs_shared  # noqa: E402

EVAL_INDEX = SHARED / "golden" / "eval" / "index.json"
MINI_ANNOTATIONS = (
    SHARED / "data" / "coco-mini-val2017" / "annotations" / "person_keypoints_val2017.json"
)
TOLERANCE = 1e-12


def _golden_cases() -> list[dict]:
    # Without the shared data: no cases (the parametrised test is then skipped, with a reason);
    # with it, test_golden_index_is_complete checks that all eight are there.
    return json.loads(EVAL_INDEX.read_text()) if EVAL_INDEX.is_file() else []


def _assert_metrics(ours: dict[str, float], expected: dict[str, float]) -> None:
    assert tuple(ours) == METRIC_NAMES
    for name in METRIC_NAMES:
        assert abs(ours[name] - expected[name]) <= TOLERANCE, (name, ours[name], expected[name])


# ------------------------------------------------------------------------------------------
# Golden parity


@needs_shared
def test_golden_index_is_complete():
    cases = _golden_cases()
    assert len(cases) == 8
    assert {c["use_area"] for c in cases} == {True, False}


@needs_shared
@pytest.mark.parametrize("case", _golden_cases(), ids=lambda c: Path(c["results"]).stem)
def test_golden_eval_cases_match_reference(case):
    expected = json.loads((SHARED / case["metrics"]).read_text())
    assert tuple(expected) == METRIC_NAMES
    ours = evaluate_keypoints(
        SHARED / case["annotations"],
        SHARED / case["results"],
        case["sigmas"],
        use_area=case["use_area"],
        max_dets=case["max_dets"],
    )
    _assert_metrics(ours, expected)


@needs_shared
def test_golden_grouping_results_match_reference_metrics():
    expected = json.loads((SHARED / "golden" / "grouping" / "metrics.json").read_text())
    ours = evaluate_keypoints(
        str(MINI_ANNOTATIONS),
        str(SHARED / "golden" / "grouping" / "results.json"),
        COCO.sigmas,
        True,
    )
    _assert_metrics(ours, expected)
    assert ours["AP"] > 0.8  # real, non-trivial numbers


@needs_shared
def test_in_memory_inputs_are_accepted_and_left_untouched():
    case = _golden_cases()[4]  # AIC, use_area=False
    annotations = json.loads((SHARED / case["annotations"]).read_text())
    results = json.loads((SHARED / case["results"]).read_text())
    before = (copy.deepcopy(annotations), copy.deepcopy(results))
    ours = evaluate_keypoints(annotations, results, AIC.sigmas, use_area=False)
    _assert_metrics(ours, json.loads((SHARED / case["metrics"]).read_text()))
    assert (annotations, results) == before


# ------------------------------------------------------------------------------------------
# Behaviour on real annotations


def _perfect_results(annotations: dict) -> list[dict]:
    """Exact copies of every evaluable GT person (not crowd, at least one labelled joint)."""
    results = []
    for ann in annotations["annotations"]:
        kpts = np.array(ann["keypoints"], dtype=float).reshape(-1, 3)
        if ann.get("iscrowd") or not (kpts[:, 2] > 0).any():
            continue
        kpts[:, 2] = 1.0
        results.append(
            {
                "image_id": ann["image_id"],
                "category_id": 1,
                "keypoints": kpts.ravel().tolist(),
                "score": 0.9,
            }
        )
    return results


@pytest.fixture(scope="module")
def mini_annotations() -> dict:
    return json.loads(MINI_ANNOTATIONS.read_text())


@needs_shared
def test_perfect_detections_score_one(mini_annotations):
    metrics = evaluate_keypoints(mini_annotations, _perfect_results(mini_annotations), COCO.sigmas)
    assert metrics["AP"] == pytest.approx(1.0, abs=1e-9)
    assert metrics["AR"] == 1.0 and metrics["AR (L)"] == 1.0


@needs_shared
def test_detections_with_all_zero_keypoint_scores_are_dropped(mini_annotations):
    results = _perfect_results(mini_annotations)
    far_away = {
        "image_id": results[0]["image_id"],
        "category_id": 1,
        "score": 1.0,
        "keypoints": [5000.0, 5000.0, 0.0] * 17,
    }
    baseline = evaluate_keypoints(mini_annotations, results, COCO.sigmas)
    assert evaluate_keypoints(mini_annotations, results + [far_away], COCO.sigmas) == baseline
    scored = dict(far_away, keypoints=[5000.0, 5000.0, 0.5] * 17)
    assert (
        evaluate_keypoints(mini_annotations, results + [scored], COCO.sigmas)["AP"] < baseline["AP"]
    )


@needs_shared
def test_only_the_top_max_dets_per_image_count(mini_annotations):
    results = _perfect_results(mini_annotations)
    image_id = results[0]["image_id"]
    decoys = [
        {
            "image_id": image_id,
            "category_id": 1,
            "score": 1.0,
            "keypoints": [9000.0 + i, 9000.0, 0.5] * 17,
        }
        for i in range(20)
    ]
    crowded = evaluate_keypoints(mini_annotations, decoys + results, COCO.sigmas, max_dets=20)
    # The 20 decoys outrank the image's true person, which is then never evaluated.
    assert crowded["AR"] < 1.0
    roomy = evaluate_keypoints(mini_annotations, decoys + results, COCO.sigmas, max_dets=40)
    assert roomy["AR"] == 1.0


@needs_shared
def test_empty_results_score_zero_like_mmpose(mini_annotations):
    assert evaluate_keypoints(mini_annotations, [], COCO.sigmas) == {n: 0.0 for n in METRIC_NAMES}


# ------------------------------------------------------------------------------------------
# Synthetic edge cases against recorded xtcocotools numbers


def _synthetic_case(seed: int) -> tuple[dict, list[dict], np.ndarray, bool]:
    """Small dataset full of edge cases: crowds, unlabelled GT, duplicate GT and detections,
    score ties, >20 detections per image, detections with all-zero scores, unknown categories,
    a second category, integer keypoints, results with a `bbox` (seed 1), GT without `area`."""
    rng = np.random.default_rng(seed)
    k = 17
    images = [{"id": int(i)} for i in rng.permutation(np.arange(200, 206))]
    anns = []
    for image in images:
        for _ in range(int(rng.integers(0, 9))):
            cx, cy = rng.uniform(0, 600, 2)
            size = float(rng.choice([20, 60, 120, 250]))
            kpts = np.stack(
                [
                    cx + rng.normal(0, size / 3, k),
                    cy + rng.normal(0, size / 3, k),
                    rng.choice([0, 1, 2], k, p=[0.3, 0.2, 0.5]),
                ],
                axis=1,
            )
            if rng.random() < 0.15:
                kpts[:, 2] = 0
            kpts[kpts[:, 2] == 0, :2] = 0
            w, h = float(rng.uniform(5, 2 * size)), float(rng.uniform(5, 2 * size))
            ann = {
                "id": len(anns) + 1,
                "image_id": image["id"],
                "category_id": int(rng.choice([1, 1, 2])),
                "keypoints": np.round(kpts).astype(int).ravel().tolist(),
                "bbox": [float(cx - w / 2), float(cy - h / 2), w, h],
                "area": float(w * h * 0.7),
            }
            if rng.random() < 0.1:
                ann["iscrowd"] = 1
            anns.append(ann)
            if rng.random() < 0.1:
                anns.append(dict(ann, id=len(anns) + 1))
    results = []
    for ann in anns:
        truth = np.array(ann["keypoints"], dtype=float).reshape(k, 3)
        for _ in range(int(rng.integers(0, 4))):
            det = truth.copy()
            det[:, :2] += rng.normal(0, float(rng.choice([1, 3, 10, 30])), (k, 2))
            det[:, 2] = 0 if rng.random() < 0.05 else rng.uniform(0, 1, k)
            score = float(rng.choice([0.5, 0.9])) if rng.random() < 0.3 else float(rng.uniform())
            category = ann["category_id"] if rng.random() < 0.95 else 7
            results.append(
                {
                    "image_id": ann["image_id"],
                    "category_id": category,
                    "keypoints": np.round(det, 3).ravel().tolist(),
                    "score": score,
                }
            )
    for image in images[:2]:
        for _ in range(25):
            det = np.stack(
                [rng.uniform(0, 640, k), rng.uniform(0, 640, k), rng.uniform(0, 1, k)], 1
            )
            results.append(
                {
                    "image_id": image["id"],
                    "category_id": 1,
                    "keypoints": np.round(det, 2).ravel().tolist(),
                    "score": float(np.round(rng.uniform(), 1)),
                }
            )
    results = [results[i] for i in rng.permutation(len(results))]
    if seed == 1:
        for det in results:
            xy = np.array(det["keypoints"]).reshape(k, 3)[:, :2]
            det["bbox"] = [
                *map(float, xy.min(0)),
                float(np.ptp(xy[:, 0]) + 7),
                float(np.ptp(xy[:, 1])),
            ]
    use_area = seed != 2
    if seed == 2:
        for ann in anns:
            ann.pop("area")
    dataset = {"images": images, "annotations": anns, "categories": [{"id": 1}, {"id": 2}]}
    return dataset, results, np.array(COCO.sigmas), use_area


# xtcocotools 1.14.3 COCOeval on `_synthetic_case(seed)`, in METRIC_NAMES order.
SYNTHETIC_EXPECTED = {
    0: (
        0.1856479250750821,
        0.2487230865943737,
        0.15882838283828377,
        0.16831683168316827,
        0.2121779580908401,
        0.4866071428571429,
        0.5892857142857143,
        0.4642857142857143,
        0.16666666666666669,
        0.975,
    ),
    1: (
        0.13944689604707075,
        0.20234980511625827,
        0.1420986216268686,
        0.6183168316831683,
        0.1442217426870892,
        0.4276315789473684,
        0.5493421052631579,
        0.4605263157894737,
        0.7,
        0.45952380952380956,
    ),
    2: (
        0.17360666426980031,
        0.2875626560867178,
        0.15672032319511017,
        0.693069306930693,
        0.13708330231519392,
        0.4725,
        0.675,
        0.45,
        0.6916666666666667,
        0.5,
    ),
}


@pytest.mark.parametrize("seed", sorted(SYNTHETIC_EXPECTED))
def test_synthetic_edge_cases_match_recorded_xtcocotools(seed):
    dataset, results, sigmas, use_area = _synthetic_case(seed)
    ours = evaluate_keypoints(dataset, results, sigmas, use_area=use_area)
    _assert_metrics(ours, dict(zip(METRIC_NAMES, SYNTHETIC_EXPECTED[seed])))


def _twin_people() -> tuple[dict, list[dict]]:
    """Two GT people on the same joints, one medium (area 2000), one large (20000); one exact
    detection (OKS 1.0 with both: a tie) and one moved 3 px (OKS ~0.75 / ~0.97)."""
    xy = np.round(np.random.default_rng(7).uniform(100, 140, (17, 2)), 1)
    truth = np.column_stack([xy, np.full(17, 2)]).ravel().tolist()
    person = {"image_id": 1, "category_id": 1, "keypoints": truth, "bbox": [100, 100, 40, 40]}
    dataset = {
        "images": [{"id": 1}],
        "categories": [{"id": 1}],
        "annotations": [dict(person, id=1, area=2000.0), dict(person, id=2, area=20000.0)],
    }
    exact = np.column_stack([xy, np.ones(17)])
    results = [
        {"image_id": 1, "category_id": 1, "keypoints": kpts.ravel().tolist(), "score": score}
        for kpts, score in ((exact, 0.9), (exact + [3.0, 0.0, 0.0], 0.8))
    ]
    return dataset, results


def test_oks_ties_go_to_the_later_gt_and_regular_gt_come_first():
    # xtcocotools: the exact detection takes GT 2 (tie, later wins) in "all" but GT 1 in
    # "medium" (GT 2 is ignored there); the moved one is left with GT 1 (OKS ~0.75).
    dataset, results = _twin_people()
    expected = (
        0.801980198019802,
        1.0,
        1.0,
        0.9999999999999998,
        0.9999999999999998,
        0.8,
        1.0,
        1.0,
        1.0,
        1.0,
    )
    _assert_metrics(
        evaluate_keypoints(dataset, results, COCO.sigmas), dict(zip(METRIC_NAMES, expected))
    )


def test_result_bbox_decides_the_detection_area_like_load_res():
    # A false positive whose keypoint box is 200x200 (large) but whose bbox is 50x50 (medium):
    # with a bbox in the first result, loadRes takes w*h of the bbox, so it hurts AP (M).
    dataset, results = _twin_people()
    spread = np.linspace(300, 500, 17)
    results.append(
        {
            "image_id": 1,
            "category_id": 1,
            "score": 0.95,
            "keypoints": np.column_stack([spread, spread, np.ones(17)]).ravel().tolist(),
        }
    )
    by_keypoints = evaluate_keypoints(dataset, results, COCO.sigmas)
    for det in results:
        xy = np.array(det["keypoints"]).reshape(17, 3)[:, :2]
        det["bbox"] = [float(xy[:, 0].min()), float(xy[:, 1].min()), 50.0, 50.0]
    by_bbox = evaluate_keypoints(dataset, results, COCO.sigmas)
    expected_bbox = (
        0.5009900990099009,
        0.6666666666666669,
        0.6666666666666669,
        0.5,
        0.9999999999999998,
        0.8,
        1.0,
        1.0,
        1.0,
        1.0,
    )
    _assert_metrics(by_bbox, dict(zip(METRIC_NAMES, expected_bbox)))
    assert by_keypoints["AP (M)"] == 0.9999999999999998 and by_keypoints["AP (L)"] == 0.5


# ------------------------------------------------------------------------------------------
# Errors


def test_unreadable_annotation_file_is_reported(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(AnnotationError, match="nope.json"):
        evaluate_keypoints(missing, [], COCO.sigmas)


def test_annotation_file_that_is_not_json_is_reported(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AnnotationError, match=r"bad\.json.*not valid JSON"):
        evaluate_keypoints(bad, [], COCO.sigmas)


def test_annotation_file_without_annotations_is_reported(tmp_path):
    path = tmp_path / "images_only.json"
    path.write_text(json.dumps({"images": [{"id": 1}], "categories": [{"id": 1}]}))
    with pytest.raises(AnnotationError, match=r"images_only\.json.*'annotations'"):
        evaluate_keypoints(path, [], COCO.sigmas)


def test_annotation_file_without_keypoints_is_reported(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text(
        json.dumps(
            {
                "images": [{"id": 1}],
                "categories": [{"id": 1}],
                "annotations": [
                    {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100}
                ],
            }
        )
    )
    with pytest.raises(AnnotationError, match=r"boxes\.json.*no annotation has keypoints"):
        evaluate_keypoints(path, [], COCO.sigmas)


@needs_shared
def test_results_for_unknown_images_name_the_ids(tmp_path, mini_annotations):
    results = _perfect_results(mini_annotations)[:3]
    results += [dict(results[0], image_id=123456789), dict(results[0], image_id=987)]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    with pytest.raises(
        AnnotationError,
        match=r"results\.json: 2 image id\(s\) not in the annotations .*: 123456789, 987$",
    ):
        evaluate_keypoints(MINI_ANNOTATIONS, path, COCO.sigmas)


@needs_shared
def test_results_with_another_keypoint_count_say_both(tmp_path, mini_annotations):
    results = [
        {
            "image_id": mini_annotations["images"][0]["id"],
            "category_id": 1,
            "keypoints": [1.0, 2.0, 0.5] * 14,
            "score": 0.5,
        }
    ]
    path = tmp_path / "aic_results.json"
    path.write_text(json.dumps(results))
    with pytest.raises(AnnotationError, match=r"aic_results\.json.*K=14.*K=17"):
        evaluate_keypoints(MINI_ANNOTATIONS, path, COCO.sigmas)


@needs_shared
def test_results_file_that_is_not_a_list_is_reported(tmp_path):
    path = tmp_path / "dict.json"
    path.write_text(json.dumps({"annotations": []}))
    with pytest.raises(AnnotationError, match=r"dict\.json.*list"):
        evaluate_keypoints(MINI_ANNOTATIONS, path, COCO.sigmas)


@needs_shared
def test_sigmas_of_another_keypoint_set_are_rejected(mini_annotations):
    with pytest.raises(AnnotationError, match="K=17.*14 sigmas"):
        evaluate_keypoints(mini_annotations, _perfect_results(mini_annotations), AIC.sigmas)


# ------------------------------------------------------------------------------------------
# OKS-NMS


def test_oks_nms_hand_checked_example():
    # Two joints, sigma 0.1, all areas 100. B is A moved 1 px right: every joint has
    # e = 1 / (2 * 0.1)^2 / 100 / 2 = 0.125, so OKS(A, B) = exp(-0.125) = 0.8825.
    # C is far away (OKS ~ 0). Scores put the visiting order at A, B, C.
    a = [[10.0, 10.0, 1.0], [20.0, 30.0, 1.0]]
    b = [[11.0, 10.0, 1.0], [21.0, 30.0, 1.0]]
    c = [[300.0, 300.0, 1.0], [310.0, 320.0, 1.0]]
    kpts, areas, sigmas = np.array([c, b, a]), np.full(3, 100.0), [0.1, 0.1]
    scores = np.array([0.5, 0.8, 0.9])
    assert oks_nms(kpts, scores, areas, sigmas, 0.9) == [2, 1, 0]  # 0.8825 <= 0.9: B stays
    assert oks_nms(kpts, scores, areas, sigmas, 0.88) == [2, 0]  # 0.8825 > 0.88: B goes
    assert oks_nms(kpts[:0], scores[:0], areas[:0], sigmas, 0.9) == []


def test_oks_nms_rejects_sigmas_of_another_length():
    with pytest.raises(ValueError):
        oks_nms(np.zeros((2, 17, 3)), np.ones(2), np.ones(2), AIC.sigmas, 0.9)


def _nms_case(seed: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """14 float32 people around 4 prototypes with 0.5-12 px of noise (many near-duplicates)."""
    rng = np.random.default_rng(seed)
    n = 14
    prototypes = rng.uniform(50, 400, (4, 1, 2)) + rng.normal(0, 40, (4, k, 2))
    noise = rng.choice([0.5, 2.0, 5.0, 12.0], size=(n, 1, 1))
    xy = prototypes[rng.integers(0, 4, n)] + rng.normal(0, 1, (n, k, 2)) * noise
    kpts = np.concatenate([xy, rng.uniform(0, 1, (n, k, 1))], axis=2).astype(np.float32)
    return kpts, rng.uniform(0, 1, n).astype(np.float32)


# mmpose 0.29 `oks_nms` (areas from the keypoint box, as its inference API computes them).
MMPOSE_NMS_KEEP = {
    (0, "coco", 0.9): [10, 5, 9, 8, 4, 0, 2, 13, 3, 1],
    (0, "aic", 0.5): [1, 10, 4, 7, 0, 5, 8, 3, 9],
    (1, "coco", 0.9): [6, 10, 9, 8, 7, 1, 2, 11, 0, 5, 4],
    (1, "aic", 0.5): [2, 3, 0, 10, 7, 4, 1, 8],
    (2, "coco", 0.9): [12, 4, 13, 10, 5, 0, 9, 8, 1, 6, 3],
    (2, "aic", 0.5): [5, 3, 4, 8, 9, 12, 6, 1, 13, 11, 10, 7],
    (3, "coco", 0.9): [6, 8, 4, 7, 9, 1, 12, 10],
    (3, "aic", 0.5): [6, 9, 2, 4, 10, 5, 8, 1, 3],
}


@pytest.mark.parametrize("key", sorted(MMPOSE_NMS_KEEP))
def test_oks_nms_matches_mmpose(key):
    seed, set_name, threshold = key
    keypoint_set = {"coco": COCO, "aic": AIC}[set_name]
    kpts, scores = _nms_case(seed, keypoint_set.num_joints)
    expected = MMPOSE_NMS_KEEP[key]
    assert oks_nms(kpts, scores, None, keypoint_set.sigmas, threshold) == expected
    xy = kpts[:, :, :2]
    areas = np.ptp(xy[:, :, 0], axis=1) * np.ptp(xy[:, :, 1], axis=1)
    assert oks_nms(kpts, scores, areas, keypoint_set.sigmas, threshold) == expected


@pytest.mark.parametrize(
    ("seed", "threshold", "expected"),
    [
        (4, 0.06720999628305435, [9, 5, 2, 12]),
        (10, 0.4046373665332794, [6, 5, 3, 1]),
        (11, 0.5930677652359009, [2, 4, 1, 9, 3, 10]),
    ],
)
def test_oks_nms_keeps_mmpose_float32_arithmetic(seed, threshold, expected):
    # Each threshold is one person's float32 OKS against the top-scoring one, as mmpose
    # computes it. In float64 that OKS lands an ulp away and flips the person's fate: mmpose's
    # own function on float64 keypoints and areas keeps [6, 5, 3, 1, 9] (seed 10) and
    # [2, 1, 9, 3, 7, 10] (seed 11). Float64 input must still be computed in float32.
    kpts, scores = _nms_case(seed, 17)
    assert oks_nms(kpts, scores, None, COCO.sigmas, threshold) == expected
    assert oks_nms(kpts.astype(np.float64), scores, None, COCO.sigmas, threshold) == expected


def test_oks_nms_visits_tied_scores_in_reversed_argsort_order():
    # numpy's default argsort keeps small tied inputs in index order; the reference reverses it.
    far_apart = np.array([[[100.0 * i, 0.0, 1.0], [100.0 * i + 5, 9.0, 1.0]] for i in range(3)])
    assert oks_nms(far_apart, np.full(3, 0.5), None, [0.1, 0.1], 0.9) == [2, 1, 0]


# ------------------------------------------------------------------------------------------
# Table


def test_metrics_table_lists_every_metric():
    metrics = dict(zip(METRIC_NAMES, [0.6543, 0.5, 0.25, -1.0, 0.75, 0.7, 0.8, 0.9, -1.0, 1.0]))
    console = Console(width=80, record=True)
    console.print(metrics_table(metrics))
    text = console.export_text()
    for name in METRIC_NAMES:
        assert name in text
    assert "0.654" in text and text.count("n/a") == 2
