"""`evaluate --report`: the error diagnosis agrees with coco-analyze, the page and its plots.

`fixtures/coco_analyze_cases.json` holds what the research code `matteorr/coco-analyze`
computed on three cases (see `fixtures/record_coco_analyze.py`): COCO-MINI val with the golden
grouping results, the evaluator tests' noisy results, and the crowded images (>= 5 people) with
another noisy seed.
"""
from __future__ import annotations

import functools
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from aepose_cli.errors import ConfigError
from aepose_cli.evaluation import analysis
from aepose_cli.evaluation.cocoeval import evaluate_keypoints_detailed
from aepose_cli.keypoints import COCO

from cli_helpers import (
    FAST,
    GOLDEN,
    MINI_VAL,
    MINI_VAL_ANN,
    SHARED,
    assert_ok,
    assert_one_line_error,
    cli_command,
    cli_env,
    describe,
    load_json,
    run_in_process,
)
from paths import needs_shared

pytestmark = needs_shared

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "coco_analyze_cases.json"
GOLDEN_RESULTS = GOLDEN / "grouping" / "results.json"
CURVE_OF = {
    "baseline": "baseline",
    "miss": "miss",
    "swap": "swap",
    "inversion": "inversion",
    "jitter": "jitter",
    "score": "score",
    "bckgd_false_pos": "background_fp",
    "false_neg": "false_negative",
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _cases() -> list[dict]:
    return load_json(FIXTURES)["cases"]


def _case_inputs(case: dict) -> tuple[dict, list]:
    ann = load_json(SHARED / case["annotations"])
    results = load_json(SHARED / case["results"])
    if case["image_ids"] is not None:
        keep = set(case["image_ids"])
        ann = dict(ann)
        ann["images"] = [im for im in ann["images"] if im["id"] in keep]
        ann["annotations"] = [a for a in ann["annotations"] if a["image_id"] in keep]
        results = [r for r in results if r["image_id"] in keep]
    return ann, results


def _analyze_as_coco_analyze(case: dict, *, quirk: bool) -> dict:
    return _analyze_case(case["name"], quirk)


@functools.cache
def _analyze_case(name: str, quirk: bool) -> dict:
    case = next(c for c in _cases() if c["name"] == name)
    ann, results = _case_inputs(case)
    params = analysis.AnalysisParams(
        area_ranges=analysis.COCO_ANALYZE_AREA_RANGES, soft_nms_keypoints_from_last_range=quirk
    )
    return analysis.analyze_keypoints(ann, results, COCO.sigmas, COCO.flip_index, True, params)


def _their_value(ours: dict, stat: dict, field: str) -> tuple[float, float]:
    """(ours, theirs) for one coco-analyze stat; undoes its reversed false-negative labels."""
    oks = stat["oks"]
    if stat["err"] == "false_neg":
        oks = 1.45 - oks  # coco-analyze labels these rows in the opposite OKS order
    thresholds = np.round(ours["oks_thresholds"], 2)
    t = int(np.flatnonzero(thresholds == round(oks, 2))[0])
    curve = ours["error_curves"][stat["area"]][CURVE_OF[stat["err"]]]
    return curve[field][t], stat[field]


# ---------------------------------------------------------------------------------------------
# agreement with coco-analyze


@pytest.fixture(scope="module", params=[c["name"] for c in _cases()])
def case(request):
    return next(c for c in _cases() if c["name"] == request.param)


def test_fixture_cases_are_the_three_required(case):
    assert case["num_detections"] > 0
    assert case["params"]["error_order"] == list(analysis.ERROR_TYPES)
    assert case["params"]["area_ranges"] == [[r[1], r[2]] for r in analysis.COCO_ANALYZE_AREA_RANGES]


def test_localization_errors_agree_with_coco_analyze(case):
    ours = _analyze_as_coco_analyze(case, quirk=False)
    for area, theirs in case["localization"].items():
        mine = ours["localization"][area]
        assert mine["matched"] == theirs["matched"], area
        for label in analysis.LABELS:
            assert mine["keypoints"][label] == theirs[label], (area, label)
        # Every labelled keypoint of an analysed match gets exactly one label.
        assert sum(mine["totals"].values()) == sum(mine["labelled_keypoints"])


def test_every_curve_agrees_with_coco_analyze(case):
    """With coco-analyze's soft-NMS quirk on, all 8 curves x 3 areas x 10 OKS agree."""
    ours = _analyze_as_coco_analyze(case, quirk=True)
    assert len(case["stats"]) == 8 * 3 * 10
    for stat in case["stats"]:
        for field in ("ap", "recall"):
            mine, theirs = _their_value(ours, stat, field)
            assert mine == pytest.approx(theirs, abs=1e-12), (stat, field)


def test_soft_nms_quirk_only_moves_the_all_range_after_scoring(case):
    """Without the quirk each area range re-scores with its own corrected keypoints: only the
    'all' range's score/background/false-negative curves may differ from coco-analyze ('large'
    is the range coco-analyze leaves the keypoints in; 'medium' detections are corrected the
    same way in both on these cases)."""
    ours = _analyze_as_coco_analyze(case, quirk=False)
    for stat in case["stats"]:
        if stat["area"] == "all" and stat["err"] in ("score", "bckgd_false_pos", "false_neg"):
            continue
        mine, theirs = _their_value(ours, stat, "ap")
        assert mine == pytest.approx(theirs, abs=1e-12), stat


def test_default_baseline_is_the_evaluators_curve(golden_analysis):
    """With the evaluator's area ranges the baseline curves are its arrays, bit for bit."""
    evaluation = evaluate_keypoints_detailed(MINI_VAL_ANN, GOLDEN_RESULTS, COCO.sigmas, True)
    ours = golden_analysis
    for a, (label, *_rest) in enumerate(analysis.ev.AREA_RANGES):
        baseline = np.array(ours["error_curves"][label]["baseline"]["precision"])
        assert np.array_equal(baseline, evaluation.precision[:, :, 0, a]), label
    assert ours["error_curves"]["all"]["baseline"]["ap"][0] == pytest.approx(evaluation.metrics["AP .5"], abs=0)


@pytest.fixture(scope="module")
def golden_analysis():
    return analysis.analyze_keypoints(MINI_VAL_ANN, GOLDEN_RESULTS, COCO.sigmas, COCO.flip_index)


def test_fixing_everything_reaches_full_recall(golden_analysis):
    ours = golden_analysis
    final = ours["error_curves"]["all"]["false_negative"]
    assert all(ap == 1.0 for ap in final["ap"])
    gains = ours["ap_gain"]["all"]
    for t in range(len(ours["oks_thresholds"])):
        total = sum(g[t] for g in gains.values())
        assert total == pytest.approx(1.0 - ours["error_curves"]["all"]["baseline"]["ap"][t], abs=1e-12)


def test_sensitivity_buckets_cover_the_people(golden_analysis):
    ours = golden_analysis
    ann = load_json(MINI_VAL_ANN)
    evaluable = [a for a in ann["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0]
    sens = ours["sensitivity"]
    assert sum(b["num_gt"] for b in sens["visible_keypoints"]) == len(evaluable)
    assert sum(b["num_gt"] for b in sens["overlaps"]) == len(evaluable)
    assert sum(b["num_gt"] for b in sens["size"]) == sum(1 for a in evaluable if a["area"] >= 32**2)
    assert [b["label"] for b in sens["visible_keypoints"]] == ["1-5", "6-10", "11-15", "16-17"]


# ---------------------------------------------------------------------------------------------
# the report folder


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.figures: list[str] = []
        self.captions: list[str] = []
        self.metric_rows: list[str] = []
        self._in: list[str] = []
        self._table_class: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self._in.append(tag)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "figure":
            self.figures.append(attrs.get("id", ""))
            self.captions.append("")
        if tag == "table":
            self._table_class = attrs.get("class")

    def handle_endtag(self, tag):
        if tag in self._in:
            del self._in[len(self._in) - 1 - self._in[::-1].index(tag)]
        if tag == "table":
            self._table_class = None

    def handle_data(self, data):
        if "figcaption" in self._in:
            self.captions[-1] += data
        if self._table_class == "metrics" and self._in and self._in[-1] == "th":
            self.metric_rows.append(data)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    assert data[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82", path  # complete file
    return width, height


@pytest.fixture(scope="module")
def golden_report(tmp_path_factory):
    """`aepose evaluate --pred GOLDEN --report DIR`, run once (in this process: matplotlib draws
    for seconds): the page tests and the command's own test read the same folder."""
    root = tmp_path_factory.mktemp("report")
    out = root / "golden"
    proc = run_in_process("evaluate", "--ann", MINI_VAL_ANN, "--pred", GOLDEN_RESULTS, "--metrics-json", root / "metrics.json", "--report", out)
    evaluation = evaluate_keypoints_detailed(MINI_VAL_ANN, GOLDEN_RESULTS, COCO.sigmas, True)
    return out, evaluation, proc


def test_page_structure(golden_report):
    from aepose_cli.evaluation.cocoeval import METRIC_NAMES
    from aepose_cli.evaluation.report import PLOTS

    out, _, proc = golden_report
    assert_ok(proc)
    page = _Page()
    page.feed((out / "index.html").read_text(encoding="utf-8"))
    assert "script" not in page.tags
    assert page.metric_rows == list(METRIC_NAMES)
    assert page.images == [p[0] for p in PLOTS]
    assert page.figures == [p[0].rsplit(".", 1)[0] for p in PLOTS]
    assert all(len(c.split()) >= 8 and c.strip().endswith(".") for c in page.captions), page.captions
    assert sorted(p.name for p in out.iterdir()) == sorted([".aepose-report.json", "index.html", "analysis.json", *page.images])
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_every_plot_is_a_png_of_reasonable_size(golden_report):
    from aepose_cli.evaluation.report import PLOTS

    out, _, proc = golden_report
    assert_ok(proc)
    for name, *_rest in PLOTS:
        path = out / name
        width, height = _png_size(path)
        assert 300 <= width <= 3000 and 300 <= height <= 3000, (name, width, height)
        assert 10_000 <= path.stat().st_size <= 2_000_000, name


def test_analysis_json_holds_the_numbers_behind_the_plots(golden_report):
    out, evaluation, proc = golden_report
    assert_ok(proc)
    data = load_json(out / "analysis.json")
    assert data["metrics"] == evaluation.metrics
    assert data["keypoints"]["names"] == list(COCO.names)
    assert len(data["recall_thresholds"]) == 101 and len(data["oks_thresholds"]) == 10
    for area, curves in data["pr_curves"].items():
        a = [r[0] for r in analysis.ev.AREA_RANGES].index(area)
        assert curves["0.5"] == evaluation.precision[0, :, 0, a].tolist()
        assert curves["0.75"] == evaluation.precision[5, :, 0, a].tolist()
        assert np.mean(curves["mean"]) == pytest.approx(evaluation.metrics[{"all": "AP", "medium": "AP (M)", "large": "AP (L)"}[area]], abs=1e-12)
    assert data["curves_order"] == list(analysis.CURVES)
    for area in ("all", "medium", "large"):
        assert set(data["error_curves"][area]) == set(analysis.CURVES)
        for curve in data["error_curves"][area].values():
            assert np.array(curve["precision"]).shape == (10, 101)
    loc = data["localization"]["all"]
    assert loc["totals"] == {"good": 553, "jitter": 59, "inversion": 0, "swap": 8, "miss": 32}
    assert set(data["sensitivity"]) == {"size", "visible_keypoints", "overlaps"}
    assert set(data["background"]["all"]) == {"false_positives", "false_negatives"}


def test_report_dir_that_would_swallow_an_input_is_refused(tmp_path):
    from aepose_cli.evaluation.report import check_report_dir

    ann = tmp_path / "ann.json"
    ann.write_text("{}")
    with pytest.raises(ConfigError, match="would replace the input"):
        check_report_dir(tmp_path, [ann])
    with pytest.raises(ConfigError, match="would replace the input"):
        check_report_dir(ann, [ann])
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a previous report"):
        check_report_dir(foreign, [ann])
    assert (foreign / "todo.txt").read_text() == "mine"


@pytest.mark.cli
def test_missing_matplotlib_is_a_one_line_error(tmp_path):
    """Shadow matplotlib with a package that fails to import, as if the extra were absent."""
    blocker = tmp_path / "blocked" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('matplotlib is not installed')\n")
    env = cli_env()
    env["PYTHONPATH"] = str(blocker.parent)
    cmd = cli_command("evaluate", "--ann", MINI_VAL_ANN, "--pred", GOLDEN_RESULTS, "--report", tmp_path / "rep")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert_one_line_error(proc, "--report needs matplotlib", "aepose-cli[report]", code=2)
    assert not (tmp_path / "rep").exists()


# ---------------------------------------------------------------------------------------------
# the command


@pytest.mark.cli
def test_cli_pred_report(golden_report):
    report, _, proc = golden_report
    assert_ok(proc)
    assert "index.html" in proc.stderr, describe(proc)
    expected = load_json(GOLDEN / "grouping" / "metrics.json")
    assert load_json(report.parent / "metrics.json") == expected
    assert load_json(report / "analysis.json")["metrics"] == expected
    _png_size(report / "error_curves_all.png")
    assert sorted(p.name for p in report.parent.iterdir()) == ["golden", "metrics.json"]


def test_a_previous_report_is_replaced_in_one_piece(tmp_path):
    from aepose_cli.evaluation.report import _commit_folder, check_report_dir

    report = tmp_path / "report"
    _commit_folder(report, {"index.html": b"old", "stale.png": b"old"})
    check_report_dir(report, [MINI_VAL_ANN])  # a previous report may be replaced
    _commit_folder(report, {"index.html": b"new", "analysis.json": b"{}"})
    assert sorted(p.name for p in report.iterdir()) == [".aepose-report.json", "analysis.json", "index.html"]  # + the marker
    assert (report / "index.html").read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no temporary or old folder left


@pytest.mark.cli
def test_cli_report_refuses_the_input_folder(tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_bytes(MINI_VAL_ANN.read_bytes())
    proc = run_in_process("evaluate", "--ann", ann, "--pred", GOLDEN_RESULTS, "--report", tmp_path)
    assert_one_line_error(proc, "would replace the input", code=2)
    assert ann.read_bytes() == MINI_VAL_ANN.read_bytes()


@pytest.mark.cli
def test_cli_inference_report(tmp_path):
    report = tmp_path / "report"
    proc = run_in_process(
        "evaluate", "--ann", MINI_VAL_ANN, "--images", MINI_VAL / "val2017", "--max-images", 2, *FAST,
        "--out", tmp_path / "results.json", "--report", report,
    )
    assert_ok(proc)
    data = load_json(report / "analysis.json")
    assert list(data["metrics"]) == list(load_json(GOLDEN / "grouping" / "metrics.json"))
    # The tiny model finds people in these two photos (75 with these settings), so the report
    # analyses them: curves and plots, no "nothing to analyse" note.
    assert load_json(tmp_path / "results.json")
    assert "error_curves" in data and "note" not in data
    assert (report / "pr_curves.png").is_file() and (report / "index.html").is_file()


@pytest.mark.cli
def test_cli_report_of_no_detections_says_so(tmp_path):
    pred = tmp_path / "none.json"
    pred.write_text("[]\n")
    report = tmp_path / "report"
    proc = run_in_process("evaluate", "--ann", MINI_VAL_ANN, "--pred", pred, "--report", report)
    assert_ok(proc)
    data = load_json(report / "analysis.json")
    assert data["note"] == "no detections: nothing to analyse"
    assert set(data["metrics"].values()) == {0.0} and "error_curves" not in data
    assert (report / "index.html").is_file() and not (report / "pr_curves.png").exists()
