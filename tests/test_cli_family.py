"""The commands with checkpoints of the other families: `aepose image`, `folder`, `video` and
`evaluate` with a HigherHRNet (two outputs) and a Hourglass-AE (four stacks) checkpoint give the
library's people; `--backend onnxruntime|openvino` run HigherHRNet; `aepose export` writes the
head's outputs as the reference's head returns them (HigherHRNet two, Hourglass-AE four); an
ambiguous bare checkpoint and a 14-joint one that does not say its set are one line each.

The checkpoints are the random-weight ones of tests/fixtures/family/ (official layouts, narrow
widths), whose metadata says 512 and no UDP; the reference parity of these families is
test_family_pipeline.py's. Other runtimes round differently from torch: they are compared with
it at the map level to 1e-4, and people only where the maps give the same top-k.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aepose_cli.backends import is_installed
from aepose_cli.estimator import PoseEstimator
from aepose_cli.grouping import top_k
from aepose_cli.model import AENet, AENetSpec, build_from_checkpoint

from cli_helpers import (
    COCO_IMAGES,
    ZIDANE,
    assert_ok,
    assert_one_line_error,
    assert_same_poses,
    keypoint_array,
    load_json,
    poses_by_image,
    run_in_process,
)
from golden_ties import HEAT_TIE, maps_with
from paths import DATA, needs_shared

pytestmark = [pytest.mark.cli, needs_shared]

CHECKPOINTS = Path(__file__).parent / "fixtures" / "family" / "checkpoints"
HIGHER = CHECKPOINTS / "higherhrnet_coco.pth"
HOURGLASS = CHECKPOINTS / "hourglass_coco.pth"
FAMILIES = {"higherhrnet": HIGHER, "hourglass": HOURGLASS}
# The commands' plumbing at a quarter of the pixels; flip on where the test is about the network.
FAST = ["--device", "cpu", "--no-flip", "--scales", "0.5"]
PHOTO = COCO_IMAGES / "000000000785.jpg"
needs_ort = pytest.mark.skipif(not is_installed("onnxruntime"), reason="onnxruntime is not installed")
needs_openvino = pytest.mark.skipif(not is_installed("openvino"), reason="openvino is not installed")


def _library_poses(checkpoint: Path, image: Path, **overrides) -> list[np.ndarray]:
    estimator = PoseEstimator(checkpoint=checkpoint, device="cpu", flip=False, scales=(0.5,), **overrides)
    return [p.keypoints for p in estimator.predict(image)]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_image_gives_the_library_people(family, tmp_path):
    out = tmp_path / "pose.json"
    proc = run_in_process("image", PHOTO, "--checkpoint", FAMILIES[family], *FAST, "--out", tmp_path / "pose.jpg", "--json", out)
    assert_ok(proc)
    assert (tmp_path / "pose.jpg").stat().st_size > 0
    got = poses_by_image(load_json(out))[1]
    assert got, "random weights still find people"
    assert_same_poses(got, _library_poses(FAMILIES[family], PHOTO), family)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_folder_and_evaluate_run_the_family(family, tmp_path):
    ann = COCO_IMAGES / "test_coco.json"
    proc = run_in_process(
        "folder", COCO_IMAGES, "--checkpoint", FAMILIES[family], *FAST, "--no-pose-nms", "--no-images", "--json", tmp_path / "folder.json",
    )  # evaluate runs without pose NMS, as the reference's evaluation does
    assert_ok(proc)
    folder = load_json(tmp_path / "folder.json")
    assert len(folder["images"]) == 4 and folder["annotations"]
    metrics = tmp_path / "metrics.json"
    proc = run_in_process(
        "evaluate", "--ann", ann, "--images", COCO_IMAGES, "--checkpoint", FAMILIES[family], *FAST,
        "--out", tmp_path / "results.json", "--metrics-json", metrics,
    )
    assert_ok(proc)
    assert set(load_json(metrics)) >= {"AP", "AR"}
    # evaluate's inference gives folder's people (test_image ties the commands to the library).
    results = load_json(tmp_path / "results.json")
    scored = {}
    for r in results:
        scored.setdefault(r["image_id"], []).append(r)
    ids = {im["file_name"]: im["id"] for im in load_json(ann)["images"]}
    written = poses_by_image(folder)
    for image in folder["images"]:
        want = written[image["id"]]
        got = [keypoint_array(r) for r in scored.get(ids[image["file_name"]], [])]
        assert_same_poses(got, want, f"{family} {image['file_name']}")


def test_video_with_higherhrnet_udp_and_tracking(tmp_path):
    clip = DATA / "mmpose-testdata" / "video" / "demo.mp4"
    proc = run_in_process(
        "video", clip, "--checkpoint", HIGHER, "--udp", *FAST, "--end", "0.5", "--track",
        "--out", tmp_path / "demo.mp4", "--json", tmp_path / "demo.json",
    )
    assert_ok(proc)
    data = load_json(tmp_path / "demo.json")
    assert [im["frame_index"] for im in data["images"]] == [0, 1, 2] and data["annotations"]
    assert all("track_id" in a for a in data["annotations"])
    assert (tmp_path / "demo.mp4").stat().st_size > 0


def test_video_skip_existing_knows_a_finished_run_before_the_model_loads(tmp_path):
    """A finished video's JSON records the settings as asked (input size and UDP left to the
    checkpoint, whose sha256 it records): `--skip-existing` compares them before the model has
    decided them, so the plain run's output is recognised as this run's."""
    clip = DATA / "mmpose-testdata" / "video" / "demo.mp4"
    run = ["video", clip, "--checkpoint", HIGHER, *FAST, "--end", "0.2", "--no-video", "--json", tmp_path / "demo.json"]
    assert_ok(run_in_process(*run))
    made = (tmp_path / "demo.json").stat().st_mtime_ns
    proc = run_in_process(*run, "--skip-existing")
    assert_ok(proc)
    assert "skipped" in proc.stderr and (tmp_path / "demo.json").stat().st_mtime_ns == made


# -- other runtimes --------------------------------------------------------------------------------
def _maps(backend: str):
    estimator = PoseEstimator(checkpoint=HIGHER, device="cpu", backend=backend, threads=1, pose_nms=None)
    return estimator, estimator.maps(ZIDANE)


def _settle_threshold_ties(maps, cands, ref_cands, threshold: float):
    """Where the detection threshold keeps a candidate in one runtime and drops it in the other,
    torch's value must be within `HEAT_TIE` of the threshold (the near-tie golden_ties.py's
    matching rule accepts); the other runtime's heatmap then takes torch's value at that pixel
    (a change below `HEAT_TIE`), so everything after that decision is still compared. Random
    weights give many weak peaks near 0.1: on zidane one of them lies 2e-7 from it."""
    split = np.argwhere((cands.val > threshold) != (ref_cands.val > threshold))
    if not len(split):
        return maps
    heatmaps = maps.heatmaps.clone()
    for joint, rank in split:
        ref_value = float(ref_cands.val[joint, rank])
        assert abs(ref_value - threshold) <= HEAT_TIE, f"joint {joint}, rank {rank}: {ref_value} is no near-tie of {threshold}"
        x, y = (int(v) for v in ref_cands.loc[joint, rank])
        assert abs(float(heatmaps[joint, y, x]) - ref_value) <= HEAT_TIE
        heatmaps[joint, y, x] = ref_value
    return maps_with(maps, heatmaps)


@pytest.fixture(scope="module")
def torch_maps():
    return _maps("torch")


@pytest.fixture(scope="module")
def onnx_home(tmp_path_factory):
    """One AEPOSE_HOME for the runtime tests: the graph is exported once and read from the cache."""
    return tmp_path_factory.mktemp("aepose_home")


@pytest.mark.parametrize("backend", [pytest.param("onnxruntime", marks=needs_ort), pytest.param("openvino", marks=needs_openvino)])
def test_other_runtimes_run_higherhrnet(backend, torch_maps, onnx_home, monkeypatch):
    """Maps to 1e-4 of torch's: heatmaps absolutely, tags (an embedding without a unit, here up
    to about 4) relative to their largest magnitude; the same people where the top-k is the
    same."""
    monkeypatch.setenv("AEPOSE_HOME", str(onnx_home))
    reference, ref_maps = torch_maps
    estimator, maps = _maps(backend)
    assert estimator.engine.backend_name == backend
    np.testing.assert_allclose(maps.heatmaps.numpy(), ref_maps.heatmaps.numpy(), rtol=0, atol=1e-4)
    tag_range = float(ref_maps.tags.abs().max())
    np.testing.assert_allclose(maps.tags.numpy(), ref_maps.tags.numpy(), rtol=0, atol=1e-4 * tag_range)
    config = reference.config
    cands, ref_cands = top_k(maps.heatmaps, maps.tags, config.max_people), top_k(ref_maps.heatmaps, ref_maps.tags, config.max_people)
    if not np.array_equal(cands.loc, ref_cands.loc):
        pytest.xfail(f"{backend}: a near-tie of the top-k reorders candidates (maps agree to 1e-4)")
    maps = _settle_threshold_ties(maps, cands, ref_cands, config.detection_threshold)
    got = estimator.poses_from_maps(maps)
    want = reference.poses_from_maps(ref_maps)
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.keypoints, b.keypoints, rtol=0, atol=1e-3)
    # The graph was cached under a name that says what it computes.
    assert [p.name for p in (onnx_home / "onnx").glob("*-higherhrnet-2out-*.onnx")]


@needs_ort
def test_cli_image_with_onnxruntime_and_higherhrnet(tmp_path, onnx_home):
    proc = run_in_process(
        "image", PHOTO, "--checkpoint", HIGHER, *FAST, "--backend", "onnxruntime", "--threads", "1",
        "--no-images", "--json", tmp_path / "ort.json", env_extra={"AEPOSE_HOME": str(onnx_home)},
    )
    assert_ok(proc)
    got = [keypoint_array(a) for a in load_json(tmp_path / "ort.json")["annotations"]]
    want = _library_poses(HIGHER, PHOTO)
    assert len(got) == len(want) > 0
    np.testing.assert_allclose(np.stack(got)[..., :2], np.stack(want)[..., :2], rtol=0, atol=1e-3)


# -- export ----------------------------------------------------------------------------------------
def _photo_and_its_mirror(height: int, width: int) -> torch.Tensor:
    """A real photo, normalised as aepose feeds the network, and its mirror: `[2, 3, H, W]`."""
    import cv2

    from aepose_cli.preprocess import to_normalised_tensor

    bgr = cv2.resize(cv2.imread(str(ZIDANE)), (width, height), interpolation=cv2.INTER_AREA)
    x = to_normalised_tensor(np.ascontiguousarray(bgr[:, :, ::-1]))
    return torch.stack([x, torch.flip(x, [2])])


def _assert_maps_close(got: list[np.ndarray], want: list[np.ndarray], num_joints: int) -> None:
    """Another runtime's raw outputs against torch's, by the map-level rule, 1e-4: heatmap
    channels (the first K of each output) and tag channels each to 1e-4 of their largest
    magnitude, at least 1 (trained heatmaps lie in [0, 1]; these random weights give raw maps of
    a few units and tags of ten or more, where float rounding grows with the values)."""
    for g, w in zip(got, want):
        for part in (slice(0, num_joints), slice(num_joints, None)):
            if w[:, part].size:
                scale = max(1.0, float(np.abs(w[:, part]).max()))
                np.testing.assert_allclose(g[:, part], w[:, part], rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize(
    "family,names",
    [("higherhrnet", ["maps_stride4", "heatmaps_stride2"]), ("hourglass", [f"maps_stage{i}" for i in range(4)])],
)
def test_export_writes_the_heads_outputs(family, names, tmp_path):
    out = tmp_path / f"{family}.onnx"
    proc = run_in_process("export", "--checkpoint", FAMILIES[family], "--format", "onnx", "--out", out)
    assert_ok(proc)
    assert all(f"'{name}'" in proc.stderr for name in names)
    net, _ = build_from_checkpoint(FAMILIES[family])
    x = _photo_and_its_mirror(128, 192)  # another shape than the export's, as a flip test feeds it
    with torch.inference_mode():
        want = [o.numpy() for o in net.raw_outputs(x)]
    if is_installed("onnxruntime"):
        import onnxruntime as ort

        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        assert [o.name for o in session.get_outputs()] == names
        got = session.run(None, {"image": x.numpy()})
        assert [g.shape for g in got] == [w.shape for w in want]
        _assert_maps_close(got, want, net.spec.num_joints)
    if is_installed("openvino"):
        import openvino as ov

        compiled = ov.Core().compile_model(str(out), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        assert [o.get_any_name() for o in compiled.outputs] == names
        got = compiled(x.numpy())
        _assert_maps_close([got[i] for i in range(len(want))], want, net.spec.num_joints)
    ts = tmp_path / f"{family}.pt"
    assert_ok(run_in_process("export", "--checkpoint", FAMILIES[family], "--format", "torchscript", "--out", ts))
    with torch.inference_mode():
        got = torch.jit.load(str(ts))(x)
    assert isinstance(got, tuple) and len(got) == len(names)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w, rtol=0, atol=1e-4)


def test_hourglass_static_export_needs_multiples_of_64(tmp_path):
    proc = run_in_process("export", "--checkpoint", HOURGLASS, "--format", "onnx", "--static", "96,128", "--out", tmp_path / "h.onnx")
    assert_one_line_error(proc, "--static 96,128", "multiples of 64", code=2)
    assert not list(tmp_path.iterdir())


# -- what a checkpoint must say ---------------------------------------------------------------------
def test_a_bare_full_size_higherhrnet_checkpoint_asks_for_its_settings(tmp_path):
    """The published HigherHRNet-W32 COCO architecture without name or metadata: 512, 640 or
    UDP cannot be told; the options settle it before any image is read."""
    with torch.device("meta"):
        spec = AENetSpec.official_higherhrnet(32, 17)
    state = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in AENet(spec).state_dict().items()}
    bare = tmp_path / "finetuned.pth"
    torch.save(state, bare)
    line = assert_one_line_error(run_in_process("image", PHOTO, "--checkpoint", bare, *FAST, "--out", tmp_path / "o.jpg"), str(bare), code=2)
    assert line.endswith("pass --input-size 512|640 and --udp or --no-udp")
    line = assert_one_line_error(run_in_process("image", PHOTO, "--checkpoint", bare, *FAST, "--input-size", "640", "--out", tmp_path / "o.jpg"), code=2)
    assert line.endswith("pass --udp or --no-udp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["finetuned.pth"]


def test_a_14_joint_checkpoint_that_does_not_say_its_set_needs_keypoints(tmp_path):
    state = torch.load(CHECKPOINTS / "higherhrnet_crowdpose.pth", weights_only=True)["state_dict"]
    bare = tmp_path / "fourteen.pth"
    torch.save({"state_dict": state}, bare)  # no meta: nothing says AIC or CrowdPose
    assert_one_line_error(run_in_process("image", PHOTO, "--checkpoint", bare, *FAST, "--out", tmp_path / "o.jpg"), str(bare), "--keypoints aic|crowdpose", code=2)
    out = tmp_path / "o.json"
    assert_ok(run_in_process("image", PHOTO, "--checkpoint", bare, *FAST, "--keypoints", "crowdpose", "--no-images", "--json", out))
    assert json.loads(out.read_text())["categories"][0]["keypoints"][12] == "top_head"
