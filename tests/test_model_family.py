"""The whole mmpose 0.x bottom-up AE family as networks: the 19 published layouts build from
their tensor shapes alone, random-weight checkpoints of every family give the reference's raw
head outputs, and checkpoints of no known family are refused in one line.

Fixtures (tests/fixtures/family/, written by tests/fixtures/record_family.py with mmpose 0.29):
`layouts.json.gz` holds the official state-dict key/shape/dtype lists and parameter counts;
`checkpoints/*.pth` tiny networks in each family's official layout; `network/*.npz` a real input
and the reference head's outputs on it.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aepose_cli.errors import CheckpointError
from aepose_cli.model import (
    AENet,
    AENetSpec,
    build_from_checkpoint,
    detect_family,
    load_checkpoint_state,
    spec_from_state,
)

FIXTURES = Path(__file__).parent / "fixtures" / "family"
LAYOUTS = json.loads(gzip.decompress((FIXTURES / "layouts.json.gz").read_bytes()))

# Published model -> (family, K, raw outputs as (stride, channels)).
EXPECTED = {
    "hrnet_w32_coco_512x512": ("hrnet", 17, [(4, 34)]),
    "hrnet_w48_coco_512x512": ("hrnet", 17, [(4, 34)]),
    "hrnet_w32_aic_512x512": ("hrnet", 14, [(4, 28)]),
    "hrnet_w48_mhp_512x512": ("hrnet", 16, [(4, 32)]),
    "hrnet_w32_coco_512x512_udp": ("hrnet", 17, [(4, 34)]),
    "hrnet_w48_coco_512x512_udp": ("hrnet", 17, [(4, 34)]),
    "higherhrnet_w32_coco_512x512": ("higherhrnet", 17, [(4, 34), (2, 17)]),
    "higherhrnet_w32_coco_640x640": ("higherhrnet", 17, [(4, 34), (2, 17)]),
    "higherhrnet_w48_coco_512x512": ("higherhrnet", 17, [(4, 34), (2, 17)]),
    "higherhrnet_w32_coco_512x512_udp": ("higherhrnet", 17, [(4, 34), (2, 17)]),
    "higherhrnet_w48_coco_512x512_udp": ("higherhrnet", 17, [(4, 34), (2, 17)]),
    "higherhrnet_w32_aic_512x512": ("higherhrnet", 14, [(4, 28), (2, 14)]),
    "higherhrnet_w32_crowdpose_512x512": ("higherhrnet", 14, [(4, 28), (2, 14)]),
    "res50_coco_512x512": ("resnet", 17, [(4, 34)]),
    "res50_coco_640x640": ("resnet", 17, [(4, 34)]),
    "res101_coco_512x512": ("resnet", 17, [(4, 34)]),
    "res152_coco_512x512": ("resnet", 17, [(4, 34)]),
    "mobilenetv2_coco_512x512": ("mobilenetv2", 17, [(4, 34)]),
    "hourglass_ae_coco_512x512": ("hourglass", 17, [(4, 34)] * 4),
}
TINY = {
    "higherhrnet_coco": ("higherhrnet", 17),
    "higherhrnet_crowdpose": ("higherhrnet", 14),
    "res50_coco": ("resnet", 17),
    "mobilenetv2_coco": ("mobilenetv2", 17),
    "hourglass_coco": ("hourglass", 17),
}


def _meta_state(name: str) -> dict[str, torch.Tensor]:
    return {
        k: torch.empty(shape, dtype=getattr(torch, dtype), device="meta")
        for k, shape, dtype in LAYOUTS[name]["state_dict"]
    }


def test_the_fixture_lists_every_published_checkpoint():
    assert set(LAYOUTS) == set(EXPECTED)
    assert len({v["checkpoint"] for v in LAYOUTS.values()}) == 19


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_official_layout_builds_from_its_shapes(name):
    family, joints, outputs = EXPECTED[name]
    spec = spec_from_state(_meta_state(name), name)
    assert (spec.family, spec.num_joints) == (family, joints)
    assert [(o.stride, o.channels) for o in spec.outputs] == outputs
    with torch.device("meta"):
        model = AENet(spec)
    got = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()]
    assert got == LAYOUTS[name]["state_dict"]  # same keys, same order, same shapes and dtypes
    assert sum(p.numel() for p in model.parameters()) == LAYOUTS[name]["num_parameters"]


def test_published_counts_are_the_known_ones():
    """Anchors against the fixture itself: the HRNet counts the spec quotes, HigherHRNet's
    paper-size 28.6 M, Hourglass-AE's 138.9 M."""
    counts = {name: LAYOUTS[name]["num_parameters"] for name in LAYOUTS}
    assert counts["hrnet_w32_coco_512x512"] == 28_536_674
    assert counts["hrnet_w48_mhp_512x512"] == 63_596_480
    assert counts["higherhrnet_w32_coco_512x512"] == 28_645_331
    assert counts["hourglass_ae_coco_512x512"] == 138_863_560
    assert counts["res50_coco_512x512"] == counts["res50_coco_640x640"] == 34_004_066


def test_official_higherhrnet_spec_equals_the_one_read_from_its_layout():
    for width in (32, 48):
        spec = spec_from_state(_meta_state(f"higherhrnet_w{width}_coco_512x512"))
        assert spec == AENetSpec.official_higherhrnet(width, 17)
    assert spec_from_state(_meta_state("hrnet_w48_coco_512x512")) == AENetSpec.official(48, 17)


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_checkpoint_gives_the_reference_raw_outputs(name):
    family, joints = TINY[name]
    model, meta = build_from_checkpoint(FIXTURES / "checkpoints" / f"{name}.pth", families=None)
    assert (model.family, model.num_joints) == (family, joints)
    assert "config" in meta and not model.training
    recorded = np.load(FIXTURES / "network" / f"{name}.npz")
    x = torch.from_numpy(recorded["input"]).float()
    with torch.no_grad():
        outs = model.raw_outputs(x)
    expected = [recorded[f"out{i}"] for i in range(len([k for k in recorded if k.startswith("out")]))]
    assert len(outs) == len(expected) == len(model.spec.outputs)
    for out, ref, spec in zip(outs, expected, model.spec.outputs):
        assert out.shape == ref.shape
        assert out.shape[1] == spec.channels and out.shape[2] * spec.stride == x.shape[2]
        np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-4)


def test_tiny_checkpoints_are_in_the_official_grammar():
    """Each tiny file has exactly the key set of its published model (only widths differ)."""
    pairs = {
        "higherhrnet_coco": "higherhrnet_w32_coco_512x512",
        "higherhrnet_crowdpose": "higherhrnet_w32_crowdpose_512x512",
        "res50_coco": "res50_coco_512x512",
        "mobilenetv2_coco": "mobilenetv2_coco_512x512",
        "hourglass_coco": "hourglass_ae_coco_512x512",
    }
    for tiny, official in pairs.items():
        state, _ = load_checkpoint_state(FIXTURES / "checkpoints" / f"{tiny}.pth")
        assert list(state) == [k for k, _, _ in LAYOUTS[official]["state_dict"]], tiny


def test_single_output_forward_keeps_the_hrnet_interface_and_multi_output_refuses_it():
    simple, _ = build_from_checkpoint(FIXTURES / "checkpoints" / "res50_coco.pth", families=None)
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        out = simple(x)
        assert torch.equal(out, simple.raw_outputs(x)[0]) and out.shape == (1, 34, 16, 16)
        higher, _ = build_from_checkpoint(FIXTURES / "checkpoints" / "higherhrnet_coco.pth", families=None)
        with pytest.raises(TypeError, match="HigherHRNet returns 2 outputs; call raw_outputs"):
            higher(x)


def test_every_family_builds_by_default_and_a_caller_may_narrow_them():
    path = FIXTURES / "checkpoints" / "hourglass_coco.pth"
    model, _ = build_from_checkpoint(path)
    assert model.family == "hourglass"
    with pytest.raises(CheckpointError) as info:
        build_from_checkpoint(path, families=frozenset({"hrnet", "higherhrnet"}))
    message = str(info.value)
    assert message == f"{path}: a Hourglass-AE checkpoint; this version of aepose runs HigherHRNet, HRNet checkpoints only"


def test_zoo_entries_are_the_reference_configs():
    """Every zoo entry against the config mmpose 0.29 publishes it with (layouts.json.gz): file
    name, family and K read from the official tensors, parameter count, input size, UDP flag and
    dataset; and the input multiple of its network."""
    from aepose_cli.zoo import zoo_models

    by_file = {layout["checkpoint"].rsplit("/", 1)[-1]: layout for layout in LAYOUTS.values()}
    for model in zoo_models().values():
        layout = by_file[model.filename]
        spec = spec_from_state(_meta_state(next(n for n, v in LAYOUTS.items() if v is layout)), model.name)
        assert (spec.family, spec.num_joints) == (model.family, model.keypoints.num_joints), model.name
        assert model.num_parameters == layout["num_parameters"], model.name
        assert model.input_size == layout["image_size"] and model.use_udp == layout["test_cfg"].get("use_udp", False), model.name
        assert model.keypoints.name == layout["dataset"], model.name
        assert spec.input_multiple == (64 if model.family == "hourglass" else 32)


def test_foreign_checkpoint_names_the_known_families(tmp_path):
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {"encoder.layer1.weight": torch.zeros(3)}}, foreign)
    with pytest.raises(CheckpointError) as info:
        build_from_checkpoint(foreign, families=None)
    message = str(info.value)
    assert "\n" not in message and str(foreign) in message
    assert "not an associative-embedding checkpoint in the mmpose layout" in message
    assert "known: HRNet, HigherHRNet, ResNet, MobileNetV2, Hourglass-AE" in message


def test_ambiguous_checkpoint_is_refused(tmp_path):
    hrnet = _meta_state("hrnet_w32_coco_512x512")
    hourglass = _meta_state("hourglass_ae_coco_512x512")
    with pytest.raises(CheckpointError, match="matches several families' layouts"):
        detect_family({**hrnet, **hourglass}, "mixed.pth")
    # An HRNet backbone whose head is missing is no AE checkpoint either.
    headless = {k: v for k, v in hrnet.items() if not k.startswith("keypoint_head.")}
    with pytest.raises(CheckpointError, match="HRNet backbone without an AE head"):
        spec_from_state(headless, "headless.pth")


def test_broken_layout_of_a_known_family_is_one_line(tmp_path):
    state, _ = load_checkpoint_state(FIXTURES / "checkpoints" / "mobilenetv2_coco.pth")
    del state["backbone.conv2.conv.weight"]
    path = tmp_path / "cut.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError) as info:
        build_from_checkpoint(path, families=None)
    message = str(info.value)
    assert message == f"{path}: MobileNetV2 layout not recognised (backbone.conv2.conv.weight)"
    # A tensor missing inside a readable layout: the strict check names it.
    state, _ = load_checkpoint_state(FIXTURES / "checkpoints" / "mobilenetv2_coco.pth")
    del state["backbone.layer3.1.conv.1.conv.weight"]
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError) as info:
        build_from_checkpoint(path, families=None)
    message = str(info.value)
    assert "\n" not in message and "1 missing keys (first: backbone.layer3.1.conv.1.conv.weight)" in message
    state, _ = load_checkpoint_state(FIXTURES / "checkpoints" / "higherhrnet_coco.pth")
    state["keypoint_head.final_layers.1.weight"] = torch.zeros(20, 4, 1, 1)
    state["keypoint_head.final_layers.1.bias"] = torch.zeros(20)
    with pytest.raises(CheckpointError, match=r"HigherHRNet outputs \(34, 20\) are not K or 2K channels"):
        spec_from_state(state, "odd.pth")


def test_weights_are_loaded_strictly(tmp_path):
    """A tensor of the right name and a wrong shape is named, not silently skipped."""
    state, _ = load_checkpoint_state(FIXTURES / "checkpoints" / "hourglass_coco.pth")
    state["backbone.remap_out_convs.0.bn.weight"] = torch.zeros(5)
    path = tmp_path / "shape.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"remap_out_convs\.0\.bn\.weight \(5,\) != \(8,\)"):
        build_from_checkpoint(path, families=None)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_spec_agrees_with_the_published_test_config(name):
    """What the tensors say (outputs with heatmaps/tags, which outputs are aggregated) is what
    each published config's test_cfg says; the aggregation settings of the family match it."""
    from aepose_cli.aggregation import AggregationSettings

    layout = LAYOUTS[name]
    cfg = layout["test_cfg"]
    spec = spec_from_state(_meta_state(name), name)
    assert [o.heatmaps for o in spec.outputs] == cfg["with_heatmaps"]
    assert [o.tags for o in spec.outputs] == cfg["with_ae"]
    assert list(spec.test_outputs) == cfg.get("select_output_index", list(range(len(spec.outputs))))
    use_udp = cfg.get("use_udp", False)
    assert use_udp == name.endswith("_udp")
    assert AggregationSettings.reference(spec.family, use_udp) == AggregationSettings(
        cfg["project2image"], cfg.get("align_corners", True)
    )
    assert layout["image_size"] == (640 if "640x640" in name else 512)
    assert cfg["num_joints"] == spec.num_joints and cfg["tag_per_joint"] is True
