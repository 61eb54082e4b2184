"""The network: official state-dict layout, parameter counts, architecture read from shapes,
and checkpoint loading (mmcv files, bare state dicts, `module.` prefixes, clear errors)."""
from __future__ import annotations

import json

import pytest
import torch

from aepose_cli.errors import CheckpointError
from aepose_cli.model import AENet, AENetSpec, build_from_checkpoint, load_checkpoint_state, spec_from_state
from aepose_cli.model.hrnet import HRNetSpec

from paths import GOLDEN, TINY_CHECKPOINT, needs_shared

pytestmark = needs_shared


def _meta_model(spec: AENetSpec) -> AENet:
    with torch.device("meta"):
        return AENet(spec)


@pytest.mark.parametrize("width,manifest", [(32, "state_dict_w32_coco.json"), (48, "state_dict_w48_coco.json")])
def test_state_dict_matches_official_manifest(width, manifest):
    expected = json.loads((GOLDEN / manifest).read_text())
    model = _meta_model(AENetSpec.official(width, 17))
    got = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()]
    assert got == [[k, list(shape), dtype] for k, shape, dtype in expected["state_dict"]]
    assert len(got) == 1754
    assert sum(p.numel() for p in model.parameters()) == expected["num_parameters"]


@pytest.mark.parametrize(
    "width,joints,count",
    [(32, 17, 28_536_674), (48, 17, 63_596_578), (32, 14, 28_536_476), (48, 16, 63_596_480)],
    ids=["w32_coco", "w48_coco", "w32_aic", "w48_mhp"],
)
def test_parameter_counts_of_the_four_published_models(width, joints, count):
    model = _meta_model(AENetSpec.official(width, joints))
    assert sum(p.numel() for p in model.parameters()) == count


@pytest.mark.parametrize("width,joints", [(32, 17), (48, 16), (32, 14)])
def test_architecture_is_read_back_from_tensor_shapes(width, joints):
    spec = AENetSpec.official(width, joints)
    state = _meta_model(spec).state_dict()
    assert spec_from_state(state) == spec


def test_tiny_checkpoint_loads_without_naming_an_architecture():
    model, meta = build_from_checkpoint(TINY_CHECKPOINT)
    spec = model.spec
    assert spec.num_joints == 17
    assert [s.channels for s in spec.backbone.stages] == [(8, 16), (8, 16, 32), (8, 16, 32, 64)]
    assert [s.modules for s in spec.backbone.stages] == [1, 4, 3]
    assert spec.backbone.stages[-1].multiscale_output is False
    assert isinstance(meta, dict) and not model.training
    out = model(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 34, 16, 16)


def _tiny_state():
    state, _ = load_checkpoint_state(TINY_CHECKPOINT)
    return state


def test_bare_state_dict_and_module_prefix_load_to_the_same_weights(tmp_path):
    state = _tiny_state()
    bare = tmp_path / "bare.pth"
    torch.save(state, bare)
    wrapped = tmp_path / "dp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "meta": {}}, wrapped)
    reference, _ = build_from_checkpoint(TINY_CHECKPOINT)
    for path in (bare, wrapped):
        model, _ = build_from_checkpoint(path)
        for (k1, v1), (k2, v2) in zip(reference.state_dict().items(), model.state_dict().items()):
            assert k1 == k2 and torch.equal(v1, v2)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = _tiny_state()
    del state["backbone.stage3.1.branches.0.0.conv1.weight"]
    state["backbone.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError) as info:
        build_from_checkpoint(path)
    message = str(info.value)
    assert "backbone.stage3.1.branches.0.0.conv1.weight" in message and "backbone.extra.weight" in message
    assert "\n" not in message and str(path) in message


def test_wrong_shape_is_named(tmp_path):
    state = _tiny_state()
    state["backbone.stage2.0.fuse_layers.0.1.0.weight"] = torch.zeros(8, 16, 3, 3)
    path = tmp_path / "shape.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"fuse_layers\.0\.1\.0\.weight \(8, 16, 3, 3\) != \(8, 16, 1, 1\)"):
        build_from_checkpoint(path)


def test_truncated_and_foreign_files_raise_checkpoint_errors(tmp_path):
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(TINY_CHECKPOINT.read_bytes()[:5000])
    foreign = tmp_path / "foreign.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, foreign)
    text = tmp_path / "text.pth"
    text.write_text("not a checkpoint")
    for path in (truncated, foreign, text, tmp_path / "missing.pth"):
        with pytest.raises(CheckpointError) as info:
            build_from_checkpoint(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_checkpoint_with_pickled_objects_is_refused_by_weights_only(tmp_path):
    path = tmp_path / "pickle.pth"
    torch.save({"state_dict": _tiny_state(), "meta": {"obj": HRNetSpec.official(32)}}, path)
    with pytest.raises(CheckpointError, match="pickle.pth: refused: it holds pickled Python objects besides tensors"):
        build_from_checkpoint(path)
