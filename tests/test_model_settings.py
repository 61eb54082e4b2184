"""What the tensors do not say (input size, UDP, keypoint set): from the options, the zoo entry
(--model, an official file name, an official sha256 prefix), the checkpoint's config text (read,
never run), the defaults; and a one-line error naming the options where a bare checkpoint has
the architecture of published models whose settings differ."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from aepose_cli import model_settings
from aepose_cli.errors import CheckpointError, ConfigError
from aepose_cli.keypoints import AIC, COCO, CROWDPOSE
from aepose_cli.model import AENet, build_from_checkpoint, load_checkpoint_state, spec_from_state
from aepose_cli.model_settings import resolve_settings, settings_from_config_text, settings_from_meta
from aepose_cli.zoo import zoo_model

from paths import TINY_CHECKPOINT, needs_shared

FIXTURES = Path(__file__).parent / "fixtures" / "family"
LAYOUTS = json.loads(gzip.decompress((FIXTURES / "layouts.json.gz").read_bytes()))


def _official(name: str) -> AENet:
    """The published architecture `name` (layouts.json.gz), on the meta device: no memory."""
    state = {k: torch.empty(shape, device="meta") for k, shape, _ in LAYOUTS[name]["state_dict"]}
    with torch.device("meta"):
        return AENet(spec_from_state(state, name))


# -- the config text ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "checkpoint,expected",
    [
        ("higherhrnet_coco", (512, False, "coco")),
        ("higherhrnet_crowdpose", (512, False, "crowdpose")),
        ("hourglass_coco", (512, False, "coco")),
    ],
)
def test_tiny_checkpoints_say_their_settings_in_their_config_text(checkpoint, expected):
    _, meta = load_checkpoint_state(FIXTURES / "checkpoints" / f"{checkpoint}.pth")
    declared = settings_from_meta(meta)
    assert (declared.input_size, declared.use_udp, declared.dataset) == expected


@needs_shared
def test_the_golden_tiny_checkpoint_says_its_size_and_no_udp_but_no_dataset():
    _, meta = load_checkpoint_state(TINY_CHECKPOINT)
    declared = settings_from_meta(meta)
    assert (declared.input_size, declared.use_udp, declared.dataset) == (512, False, None)


def test_config_text_is_read_never_run(tmp_path):
    marker = tmp_path / "ran"
    text = (
        f"data_cfg = dict(image_size=__import__('os').system('touch {marker}'))\n"
        "model = dict(test_cfg=dict(use_udp=True, project2image=False))\n"
        "dataset_info = dict(dataset_name='crowdpose')\n"
    )
    declared = settings_from_config_text(text)
    assert (declared.input_size, declared.use_udp, declared.dataset) == (None, True, "crowdpose")
    assert not marker.exists()
    assert settings_from_config_text("data_cfg = dict(image_size=640\n") == model_settings.DeclaredSettings()
    assert settings_from_config_text("x" * (model_settings.MAX_CONFIG_CHARS + 1)) == model_settings.DeclaredSettings()
    # The test dataset's data_cfg and class, where the top level has neither.
    nested = "data = dict(test=dict(type='BottomUpAicDataset', data_cfg=dict(image_size=640)))\nmodel = dict(test_cfg=dict())"
    assert settings_from_config_text(nested) == model_settings.DeclaredSettings(640, False, "aic")


# -- resolution -----------------------------------------------------------------------------------
def test_a_bare_higherhrnet_w32_coco_checkpoint_is_ambiguous_and_the_error_names_the_options():
    net = _official("higherhrnet_w32_coco_512x512")
    with pytest.raises(ConfigError) as info:
        resolve_settings(net, "mine.pth", {}, None, data=b"not an official file")
    message = str(info.value)
    assert "\n" not in message and message.startswith("mine.pth: a HigherHRNet-W32 COCO checkpoint")
    assert "published for 512, 640, 512 with UDP" in message
    assert message.endswith("pass --input-size 512|640 and --udp or --no-udp")
    with pytest.raises(ConfigError, match=r"pass --udp or --no-udp$"):
        resolve_settings(net, "mine.pth", {}, None, input_size=640, data=b"x")
    settings = resolve_settings(net, "mine.pth", {}, None, input_size=640, use_udp=False, data=b"x")
    assert (settings.input_size, settings.use_udp, settings.keypoints) == (640, False, COCO)
    assert settings.sources == ("options", "options", "joint count")


@pytest.mark.parametrize(
    "layout,options",
    [("res50_coco_512x512", "--input-size 512|640"), ("hrnet_w32_coco_512x512", "--udp or --no-udp"), ("higherhrnet_w48_coco_512x512", "--udp or --no-udp")],
)
def test_ambiguity_names_only_the_settings_the_published_models_disagree_on(layout, options):
    with pytest.raises(ConfigError) as info:
        resolve_settings(_official(layout), "mine.pth", {}, None, data=b"x")
    assert str(info.value).endswith(f"pass {options}")


def test_published_architectures_without_disagreement_and_unpublished_ones_take_the_defaults():
    for layout in ("mobilenetv2_coco_512x512", "hourglass_ae_coco_512x512", "res101_coco_512x512", "hrnet_w48_mhp_512x512"):
        settings = resolve_settings(_official(layout), "mine.pth", {}, None, data=b"x")
        assert (settings.input_size, settings.use_udp) == (512, False), layout
    tiny, _ = build_from_checkpoint(FIXTURES / "checkpoints" / "res50_coco.pth")
    settings = resolve_settings(tiny, "tiny.pth", {}, None, data=b"x")
    assert (settings.input_size, settings.use_udp, settings.keypoints, settings.sources) == (512, False, COCO, ("default", "default", "joint count"))


def test_14_joints_need_the_keypoint_set_unless_the_checkpoint_says_it():
    net = _official("higherhrnet_w32_crowdpose_512x512")
    with pytest.raises(ConfigError, match=r"^mine.pth has 14 keypoints, which AIC and CrowdPose both have.*--keypoints aic\|crowdpose$"):
        resolve_settings(net, "mine.pth", {}, None, data=b"x")
    assert resolve_settings(net, "mine.pth", {}, None, keypoints="crowdpose").keypoints is CROWDPOSE
    assert resolve_settings(net, "mine.pth", {"config": "dataset_info = dict(dataset_name='aic')"}, None).keypoints is AIC
    assert resolve_settings(net, "x.pth", {}, zoo_model("higherhrnet_w32_crowdpose_512")).keypoints is CROWDPOSE


def test_the_zoo_entry_wins_over_the_metadata_and_the_options_over_both():
    net = _official("higherhrnet_w32_coco_512x512")
    meta = {"config": "data_cfg = dict(image_size=512)\nmodel = dict(test_cfg=dict(use_udp=True))"}
    from_meta = resolve_settings(net, "a.pth", meta, None)
    assert (from_meta.input_size, from_meta.use_udp, from_meta.sources[:2]) == (512, True, ("checkpoint metadata", "checkpoint metadata"))
    from_zoo = resolve_settings(net, "a.pth", meta, zoo_model("higherhrnet_w32_coco_640"))
    assert (from_zoo.input_size, from_zoo.use_udp, from_zoo.sources[0]) == (640, False, "zoo entry higherhrnet_w32_coco_640")
    from_options = resolve_settings(net, "a.pth", meta, zoo_model("higherhrnet_w32_coco_640"), input_size=512, use_udp=True)
    assert (from_options.input_size, from_options.use_udp) == (512, True)


def test_a_renamed_official_checkpoint_is_known_by_its_sha256_prefix(monkeypatch):
    net = _official("higherhrnet_w32_coco_512x512")
    monkeypatch.setattr(model_settings, "_sha256", lambda path, data: "a22fe938" + "0" * 56)
    settings = resolve_settings(net, "renamed.pth", {}, None)
    assert (settings.input_size, settings.use_udp, settings.sources[0]) == (640, False, "zoo entry higherhrnet_w32_coco_640")


def test_a_zoo_entry_of_another_architecture_is_refused():
    with pytest.raises(CheckpointError, match=r"a ResNet checkpoint with 17 keypoints, but --model higherhrnet_w32_coco_512 is HigherHRNet-W32"):
        resolve_settings(_official("res50_coco_512x512"), "res.pth", {}, zoo_model("higherhrnet_w32_coco_512"))


@needs_shared
def test_the_estimator_runs_with_the_resolved_settings():
    from aepose_cli.estimator import PoseEstimator

    plain = PoseEstimator(checkpoint=TINY_CHECKPOINT)
    assert (plain.config.input_size, plain.config.use_udp) == (512, False)
    udp = PoseEstimator(checkpoint=TINY_CHECKPOINT, use_udp=True, input_size=640)
    assert (udp.config.input_size, udp.config.use_udp) == (640, True)
    assert udp.settings.sources == ("options", "options", "joint count")
