"""Property: whatever the flags, a run changes nothing its output plan did not declare (issue 22).

Hypothesis draws a command (`image`, `folder`, `video`, `evaluate`, `export`) and a random
combination of its output flags (`--out`, `--json`, `--jsonl`, `--csv`, `--metrics-json`,
`--report`, the `--no-...` switches, `--skip-existing`, `-r`, `--image-ids`) over a small world of paths: the inputs, their
folder, a sibling folder, an existing file of the user's, a symbolic link to an input, `.`, new
files and folders; sometimes the same command twice (the second run meets the first one's
outputs). Each run goes in this process against real small inputs (COCO photos, a PNG, a real
clip, annotations and results), with the tiny checkpoint at FAST settings. After each run the
world's file tree is compared with what it was, whatever the exit code:

* every input is byte-identical (sha256);
* every path created, changed or deleted is one a plan of that run declared (the scopes its
  `OutputPlan`s made, caught as they are made: `declared_paths()`; a writer's own fallback
  scope does not count);
* no temporary, lock or probe file is left;
* stderr holds no traceback, and the exit code is one of the README's.

CI runs `AEPOSE_PLAN_EXAMPLES` examples (default 30, derandomized, so every CI run draws the same
ones); `benchmarks/soak_plan.py --examples N` runs a longer, random profile.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# The [test] extra installs Hypothesis; an environment without it (the minimum-versions step of
# .ci/run installs only what it pins, plus pytest) skips this module rather than failing to collect.
pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cli_helpers import COCO_IMAGES, DATA, TINY_CHECKPOINT, describe, load_json, run_in_process
from paths import needs_shared

pytestmark = [pytest.mark.cli, needs_shared]

EXAMPLES = int(os.environ.get("AEPOSE_PLAN_EXAMPLES", "30"))
RANDOM = os.environ.get("AEPOSE_PLAN_RANDOM") == "1"  # the soak profile: other examples each run
EXIT_CODES = {0, 1, 2, 3, 4, 5, 6, 7}
PHOTOS = ("in/a.jpg", "in/b.jpg", "in/c.png")
# The model at its cheapest: the plumbing under test is the same at any scale.
TINY_RUN = ["--checkpoint", str(TINY_CHECKPOINT), "--device", "cpu", "--no-flip", "--scales", "0.125", "--max-people", "5"]
LEFTOVER_MARKS = (".tmp-", ".part-", ".old-", ".aepose-probe", ".aepose-lock")

# Where an output flag may point, relative to the world (the run's working folder).
PLACES = (
    "in/a.jpg", "in/clip.mp4", "in/", "in", "in/new.json", "in/x.mp4", "sib/", "sib", "sib/new.json", "sib/new.jpg",
    "sib/new.mp4", "user.txt", "link.jpg", ".", "./", "new/", "new/deep/x.json", "out.json", "out.jpg", "out.mp4", "ann.json",
    "rep", "sib/rep/",
)


def _make_world(root: Path) -> None:
    """The inputs (three photos, one a PNG; a 5-frame clip; annotations of the photos and
    results of them), a sibling folder, a file of the user's, a link to an input."""
    import cv2

    (root / "in").mkdir(parents=True)
    (root / "sib").mkdir()
    photos = sorted(COCO_IMAGES.glob("*.jpg"))[:3]
    shutil.copy(photos[0], root / "in" / "a.jpg")
    shutil.copy(photos[1], root / "in" / "b.jpg")
    assert cv2.imwrite(str(root / "in" / "c.png"), cv2.imread(str(photos[2])))
    shutil.copy(DATA / "mmpose-testdata" / "video" / "demo.mp4", root / "in" / "clip.mp4")
    data = load_json(COCO_IMAGES / "test_coco.json")
    names = {photos[0].name: "a.jpg", photos[1].name: "b.jpg", photos[2].name: "c.png"}
    data["images"] = [dict(im, file_name=names[im["file_name"]]) for im in data["images"] if im["file_name"] in names]
    kept = {im["id"] for im in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in kept]
    (root / "ann.json").write_text(json.dumps(data))
    results = [
        {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 0.9}
        for a in data["annotations"] if a.get("num_keypoints", 1)
    ]
    (root / "pred.json").write_text(json.dumps(results))
    (root / "user.txt").write_text("the user's own file\n")
    os.symlink(os.path.join("in", "a.jpg"), root / "link.jpg")


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plan-world") / "world"
    _make_world(root)
    return root


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root (links not followed): ('d',), ('l', target) or ('f', sha256)."""
    entries: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                entries[rel] = ("l", os.readlink(path))
            elif path.is_dir():
                entries[rel] = ("d",)
            else:
                entries[rel] = ("f", hashlib.sha256(path.read_bytes()).hexdigest())
    return entries


# -- the runs ----------------------------------------------------------------------------------


place = st.sampled_from(PLACES)


def _maybe(flag: str, values=place):
    return st.one_of(st.just([]), values.map(lambda v: [flag, v]))


def _switch(flag: str):
    return st.sampled_from([[], [flag]])


# `--image-ids`: the default, file stems (refused: a.jpg is not a number), the annotations' ids
# (an input the run reads, which no output may replace).
IMAGE_IDS = st.sampled_from([[], ["--image-ids", "stem"], ["--image-ids", "from:ann.json"]])


@st.composite
def image_runs(draw):
    images = draw(st.lists(st.sampled_from(["in/a.jpg", "in/c.png", "link.jpg", "in/b.jpg"]), min_size=1, max_size=3, unique=True))
    return [
        "image", *images, *draw(_maybe("--out")), *draw(_maybe("--json")), *draw(_switch("--no-images")), *draw(_switch("--no-json")),
        *draw(_maybe("--csv")), *draw(IMAGE_IDS),
    ]


@st.composite
def folder_runs(draw):
    return [
        "folder", draw(st.sampled_from(["in", "in/", "."])), *draw(_maybe("--out")), *draw(_maybe("--json")),
        *draw(_switch("--no-images")), *draw(_switch("--no-json")), *draw(_switch("--skip-existing")), *draw(_switch("-r")),
        *draw(_maybe("--csv")), *draw(IMAGE_IDS),
    ]


@st.composite
def video_runs(draw):
    sources = draw(st.sampled_from([["in/clip.mp4"], ["in"], ["in/*.mp4"], ["in/clip.mp4", "in/a.jpg"]]))
    return [
        "video", *sources, "--stride", "5", *draw(_maybe("--out")), *draw(_maybe("--json")),
        *draw(_maybe("--jsonl", st.one_of(st.just("-"), place))), *draw(_switch("--no-video")), *draw(_switch("--no-json")),
        *draw(_switch("--skip-existing")), *draw(_maybe("--csv")),
    ]


@st.composite
def evaluate_runs(draw):
    source = draw(st.sampled_from([["--images", "in"], ["--pred", "pred.json"], ["--images", "."]]))
    return [
        "evaluate", "--ann", "ann.json", *source, *draw(_maybe("--out")), *draw(_maybe("--metrics-json")),
        *draw(_maybe("--report", st.sampled_from(["rep", "in", "sib", "sib/rep/", ".", "new/rep", "user.txt"]))),
        *draw(_switch("--skip-existing")), *draw(st.sampled_from([[], ["--max-images", "2"]])),
    ]


@st.composite
def export_runs(draw):
    return ["export", "--format", draw(st.sampled_from(["onnx", "torchscript"])), "--out", draw(place)]


commands = st.one_of(image_runs(), folder_runs(), video_runs(), evaluate_runs(), export_runs())
# One run, or (one time in three) the same run twice: the second meets the first one's outputs.
scenarios = st.tuples(commands, st.sampled_from([False, False, True]))


def _argv(command: list[str]) -> list[str]:
    model = ["--checkpoint", str(TINY_CHECKPOINT)] if command[0] == "export" else TINY_RUN
    return [*command, *model]


def inputs_of(argv: list[str]) -> set[str]:
    """The world's files a run reads as inputs (which no flag may change): the images named, the
    folder's images, the video, the annotations, results and annotated images."""
    command, rest = argv[0], argv[1:]
    positional = []
    for arg in rest:
        if arg.startswith("-"):
            break
        positional.append("in/a.jpg" if arg == "link.jpg" else arg)
    annotations = {"ann.json"} if "from:ann.json" in rest else set()
    if command == "image":
        return set(positional) | annotations
    if command == "folder":
        if positional[0].rstrip("/") == "in" or "-r" in rest:
            return set(PHOTOS) | annotations
        return {"in/a.jpg"} | annotations  # `.` without -r lists link.jpg, a link to it
    if command == "video":
        return {"in/clip.mp4" if arg.rstrip("/") in ("in", "in/*.mp4") else arg for arg in positional}
    if command == "evaluate":
        return {"ann.json", *(("pred.json",) if "--pred" in rest else PHOTOS)}
    return set()


class Declared:
    """The file scopes the run's output plans made (caught by wrapping `OutputPlan.scope`, which
    `check()` returns), and the union of the paths they declared.

    Only the plans' own scopes count: a writer that built a scope of its own (`FileScope.of`, the
    fallback for library callers) instead of the one its plan checked would declare whatever it
    writes, and would pass a check against every sealed scope. The caches' scopes write under
    $AEPOSE_HOME, outside the world."""

    def __init__(self, monkeypatch) -> None:
        from aepose_cli.io.output_plan import OutputPlan

        self.scopes: list = []
        make_scope = OutputPlan.scope
        scopes = self.scopes

        def recording_scope(plan):
            scope = make_scope(plan)
            scopes.append(scope)
            return scope

        monkeypatch.setattr(OutputPlan, "scope", recording_scope)

    def paths(self) -> set[str]:
        return set().union(*(scope.declared_paths() for scope in self.scopes))


def check_run(world: Path, argv: list[str], declared: Declared) -> None:
    """Run `aepose ARGV` in `world` and check the property (see the module docstring)."""
    declared.scopes.clear()
    before = _snapshot(world)
    proc = run_in_process(*argv, cwd=world)
    after = _snapshot(world)
    what = f"aepose {' '.join(argv)}\n{describe(proc)}"
    assert proc.returncode in EXIT_CODES, what
    assert "Traceback" not in proc.stderr, what
    for name in sorted(inputs_of(argv)):
        assert after.get(name) == before.get(name), f"input {name} changed\n{what}"
    touched = {rel for rel in set(before) | set(after) if before.get(rel) != after.get(rel)}
    allowed = declared.paths()
    outside = sorted(rel for rel in touched if os.path.realpath(world / rel) not in allowed)
    assert not outside, f"created, changed or deleted outside the plan: {outside}\n{what}"
    left = sorted(rel for rel in after if any(mark in rel.rsplit("/", 1)[-1] for mark in LEFTOVER_MARKS))
    assert not left, f"left behind: {left}\n{what}"


@given(scenario=scenarios)
@settings(
    max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
def test_a_run_touches_only_what_its_plan_declared(template, monkeypatch, scenario):
    command, twice = scenario
    home = tempfile.mkdtemp(prefix="aepose-plan-home-")
    with tempfile.TemporaryDirectory(prefix="aepose-plan-") as folder, monkeypatch.context() as patch:
        patch.setenv("AEPOSE_HOME", home)  # the caches' own plans, outside the world
        world = Path(folder) / "world"
        shutil.copytree(template, world, symlinks=True)
        declared = Declared(patch)
        argv = _argv(command)
        for _ in range(2 if twice else 1):
            check_run(world, argv, declared)
    shutil.rmtree(home, ignore_errors=True)


def test_the_world_has_each_kind_of_path(template):
    """The property runs over what its docstring says: inputs, their folder, a sibling folder,
    a user's file, a link to an input, and annotations that match the photos."""
    assert (template / "link.jpg").is_symlink() and (template / "link.jpg").resolve() == (template / "in" / "a.jpg").resolve()
    assert (template / "sib").is_dir() and (template / "user.txt").is_file()
    assert inputs_of(["image", "link.jpg", "--out", "x"]) == {"in/a.jpg"}
    assert inputs_of(["evaluate", "--ann", "ann.json", "--images", "in"]) == {"ann.json", *PHOTOS}
    names = {im["file_name"] for im in load_json(template / "ann.json")["images"]}
    assert names == {"a.jpg", "b.jpg", "c.png"}
    assert load_json(template / "pred.json")
