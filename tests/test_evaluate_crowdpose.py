"""CrowdPose evaluation: xtcocotools' `keypoints_crowd` mode (as mmpose 0.29 calls it, with
use_area=False) to 1e-12, on noisy results for mmpose's CrowdPose sample and for a larger
CrowdPose-format set derived from COCO val2017 (tests/fixtures/crowdpose_eval/, recorded with
xtcocotools 1.14.3 by tests/fixtures/record_crowdpose_eval.py, whose docstring says how the set
was derived); and `aepose evaluate` choosing that mode for CrowdPose annotations, with --report.
"""
from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import pytest

from aepose_cli.errors import AnnotationError
from aepose_cli.evaluation.cocoeval import CROWD_METRIC_NAMES, evaluate_keypoints
from aepose_cli.keypoints import CROWDPOSE

from paths import SHARED, needs_shared

FIXTURES = Path(__file__).parent / "fixtures" / "crowdpose_eval"
INDEX = json.loads((FIXTURES / "index.json").read_text())
SAMPLE = SHARED / "data" / "mmpose-testdata" / "crowdpose" / "test_crowdpose.json"
TOLERANCE = 1e-12


def _load(name: str):
    if name.endswith(".gz"):
        with gzip.open(FIXTURES / name, "rt", encoding="utf-8") as f:
            return json.load(f)
    return json.loads((SHARED / name).read_text())


def _case_id(case: dict) -> str:
    return case["results"].removesuffix("_results.json.gz")


@pytest.mark.parametrize("case", INDEX["cases"], ids=_case_id)
def test_crowdpose_metrics_equal_xtcocotools(case):
    if not case["annotations"].endswith(".gz") and not SAMPLE.is_file():
        pytest.skip(f"needs the shared test data in {SHARED}")
    metrics = evaluate_keypoints(_load(case["annotations"]), _load(case["results"]), CROWDPOSE.sigmas, False, mode="keypoints_crowd")
    assert tuple(metrics) == CROWD_METRIC_NAMES == tuple(case["metrics"])
    for name, expected in case["metrics"].items():
        assert abs(metrics[name] - expected) <= TOLERANCE, (name, metrics[name], expected)


def test_the_derived_set_covers_what_the_mode_does_differently():
    """Easy, medium and hard images all occur, and some people have labelled joints but
    num_keypoints 0: crowd mode ignores them where keypoints mode counts them, so the two modes
    give other numbers on the same results (the comparison above can fail)."""
    info = INDEX["coco_as_crowdpose"]
    assert all(n > 0 for n in info["easy_medium_hard_images"]) and info["num_keypoints_0_with_labelled_joints"] > 0
    case = next(c for c in INDEX["cases"] if c["annotations"] == "coco_as_crowdpose.json.gz")
    plain = evaluate_keypoints(_load(case["annotations"]), _load(case["results"]), CROWDPOSE.sigmas, False)
    assert abs(plain["AP"] - case["metrics"]["AP"]) > 1e-4


def test_crowd_mode_needs_crowd_index_and_num_keypoints():
    data = _load("coco_as_crowdpose.json.gz")
    results = _load(INDEX["cases"][-1]["results"])
    without_index = copy.deepcopy(data)
    del without_index["images"][3]["crowdIndex"]
    with pytest.raises(AnnotationError, match="crowdIndex"):
        evaluate_keypoints(without_index, results, CROWDPOSE.sigmas, False, mode="keypoints_crowd")
    without_count = copy.deepcopy(data)
    del without_count["annotations"][5]["num_keypoints"]
    with pytest.raises(AnnotationError, match="num_keypoints"):
        evaluate_keypoints(without_count, results, CROWDPOSE.sigmas, False, mode="keypoints_crowd")


# -- aepose evaluate -----------------------------------------------------------------------------
@pytest.fixture()
def sample_files(tmp_path):
    case = next(c for c in INDEX["cases"] if c["results"].startswith("crowdpose_sample_seed1"))
    results = tmp_path / "results.json"
    results.write_text(json.dumps(_load(case["results"])))
    return results, case["metrics"]


@pytest.mark.cli
@needs_shared
def test_cli_scores_crowdpose_annotations_in_crowd_mode_with_a_report(sample_files, tmp_path):
    from cli_helpers import assert_ok, load_json, run_in_process

    results, expected = sample_files
    metrics_json, report = tmp_path / "metrics.json", tmp_path / "report"
    # No --keypoints: the annotations' crowdIndex says CrowdPose.
    proc = run_in_process("evaluate", "--ann", SAMPLE, "--pred", results, "--metrics-json", metrics_json, "--report", report)
    assert_ok(proc)
    assert "keypoints_crowd" in proc.stdout and "AP(H)" in proc.stdout
    assert load_json(metrics_json) == expected  # exact floats, in xtcocotools' order
    analysis = load_json(report / "analysis.json")
    assert analysis["keypoints"]["set"] == "crowdpose" and len(analysis["keypoints"]["names"]) == 14
    assert analysis["metrics"] == expected
    page = (report / "index.html").read_text()
    metrics_table = page.split('<table class="metrics">', 1)[1].split("</table>", 1)[0]
    assert metrics_table.count("<tr>") == len(CROWD_METRIC_NAMES) and "AP(E)" in metrics_table
    assert (report / "skeleton_errors.png").stat().st_size > 0


@pytest.mark.cli
@needs_shared
def test_cli_14_joint_annotations_that_do_not_say_which_need_keypoints(tmp_path, sample_files):
    from cli_helpers import assert_ok, assert_one_line_error, run_in_process

    results, _ = sample_files
    data = json.loads(SAMPLE.read_text())
    for image in data["images"]:
        del image["crowdIndex"]
    data["categories"][0]["keypoints"] = [f"joint{i}" for i in range(14)]
    ann = tmp_path / "unnamed.json"
    ann.write_text(json.dumps(data))
    assert_one_line_error(run_in_process("evaluate", "--ann", ann, "--pred", results), str(ann), "--keypoints aic|crowdpose", code=2)
    # --keypoints crowdpose: crowd mode, which needs the crowd index the file lacks.
    assert_one_line_error(run_in_process("evaluate", "--ann", ann, "--pred", results, "--keypoints", "crowdpose"), "crowdIndex", code=2)
    assert_ok(run_in_process("evaluate", "--ann", ann, "--pred", results, "--keypoints", "aic"))
