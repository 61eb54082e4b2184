"""Model zoo and download cache: every network path is simulated (file:// URLs, injected openers)."""
from __future__ import annotations

import hashlib
import http.client
import io
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from rich.console import Console

from aepose_cli import zoo
from aepose_cli.cli.console import DownloadBar, models_table
from aepose_cli.errors import CheckpointError, ConfigError, DownloadError
from aepose_cli.keypoints import AIC, COCO, CROWDPOSE, MHP
from aepose_cli.zoo import (
    ZooModel,
    cache_dir,
    checkpoint_path,
    fetch_checkpoint,
    is_cached,
    resolve_checkpoint,
    verify_sha256_prefix,
    zoo_model,
    zoo_models,
)

PAYLOAD = os.urandom(2 * (1 << 20) + 12345)  # spans three 1 MiB chunks
PAYLOAD_PREFIX = hashlib.sha256(PAYLOAD).hexdigest()[:8]


def _model_served_from(directory: Path, payload: bytes, prefix: str | None = None) -> ZooModel:
    """A zoo entry whose URL is a file:// copy of `payload`, named with `prefix` (default: the true one)."""
    prefix = prefix or hashlib.sha256(payload).hexdigest()[:8]
    filename = f"hrnet_test_512x512-{prefix}_20240101.pth"
    source = directory / "server" / filename
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(payload)
    return ZooModel(
        name="hrnet_test",
        url=source.as_uri(),
        sha256_prefix=prefix,
        keypoints=COCO,
        width=32,
        ap_single=0.5,
        ap_multi=0.6,
        filename=filename,
    )


def _cache_files(cache: Path) -> list[str]:
    """Every file under the cache root, relative names (the cache must hold nothing half-written)."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())


def _no_network(*args, **kwargs):
    raise AssertionError("the opener must not be called")


class _FailingResponse:
    """Wraps a real response and raises `error` on read number `fail_on_read` (1-based)."""

    def __init__(self, response, error: BaseException, fail_on_read: int = 2):
        self._response = response
        self._error = error
        self._reads_left = fail_on_read
        self.headers = response.headers
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        self._reads_left -= 1
        if self._reads_left == 0:
            raise self._error
        return self._response.read(size)

    def close(self) -> None:
        self.closed = True
        self._response.close()


def _opener_failing_midway(error: BaseException, responses: list | None = None):
    def opener(url, timeout=None):
        response = _FailingResponse(urllib.request.urlopen(url, timeout=timeout), error)
        if responses is not None:
            responses.append(response)
        return response

    return opener


# --------------------------------------------------------------------------------------------
# The published table


# The published table (issue 23): name -> (file, family, width, keypoints, input size, UDP, AP single, AP multi).
PUBLISHED = {
    "hrnet_w32_coco_512": ("hrnet_w32_coco_512x512-bcb8c247_20200816.pth", "hrnet", 32, COCO, 512, False, 0.654, 0.698),
    "hrnet_w48_coco_512": ("hrnet_w48_coco_512x512-cf72fcdf_20200816.pth", "hrnet", 48, COCO, 512, False, 0.665, 0.712),
    "hrnet_w48_mhp_512": ("hrnet_w48_mhp_512x512-85a6ab6f_20201229.pth", "hrnet", 48, MHP, 512, False, 0.583, 0.592),
    "hrnet_w32_aic_512": ("hrnet_w32_aic_512x512-77e2a98a_20210131.pth", "hrnet", 32, AIC, 512, False, 0.303, 0.318),
    "hrnet_w32_coco_512_udp": ("hrnet_w32_coco_512x512_udp-91663bf9_20210220.pth", "hrnet", 32, COCO, 512, True, 0.671, None),
    "hrnet_w48_coco_512_udp": ("hrnet_w48_coco_512x512_udp-de08fd8c_20210222.pth", "hrnet", 48, COCO, 512, True, 0.681, None),
    "higherhrnet_w32_coco_512": ("higher_hrnet32_coco_512x512-8ae85183_20200713.pth", "higherhrnet", 32, COCO, 512, False, 0.677, 0.706),
    "higherhrnet_w32_coco_640": ("higher_hrnet32_coco_640x640-a22fe938_20200712.pth", "higherhrnet", 32, COCO, 640, False, 0.686, 0.706),
    "higherhrnet_w48_coco_512": ("higher_hrnet48_coco_512x512-60fedcbc_20200712.pth", "higherhrnet", 48, COCO, 512, False, 0.686, 0.716),
    "higherhrnet_w32_coco_512_udp": ("higher_hrnet32_coco_512x512_udp-8cc64794_20210222.pth", "higherhrnet", 32, COCO, 512, True, 0.678, None),
    "higherhrnet_w48_coco_512_udp": ("higher_hrnet48_coco_512x512_udp-7cad61ef_20210222.pth", "higherhrnet", 48, COCO, 512, True, 0.690, None),
    "higherhrnet_w32_aic_512": ("higher_hrnet32_aic_512x512-9a674c33_20210130.pth", "higherhrnet", 32, AIC, 512, False, 0.315, 0.323),
    "higherhrnet_w32_crowdpose_512": ("higher_hrnet32_crowdpose_512x512-1aa4a132_20201017.pth", "higherhrnet", 32, CROWDPOSE, 512, False, 0.655, 0.661),
    "resnet50_coco_512": ("res50_coco_512x512-5521bead_20200816.pth", "resnet", 50, COCO, 512, False, 0.466, 0.503),
    "resnet50_coco_640": ("res50_coco_640x640-2046f9cb_20200822.pth", "resnet", 50, COCO, 640, False, 0.479, 0.525),
    "resnet101_coco_512": ("res101_coco_512x512-e0c95157_20200816.pth", "resnet", 101, COCO, 512, False, 0.554, 0.603),
    "resnet152_coco_512": ("res152_coco_512x512-364eb38d_20200822.pth", "resnet", 152, COCO, 512, False, 0.595, 0.660),
    "mobilenetv2_coco_512": ("mobilenetv2_coco_512x512-4d96e309_20200816.pth", "mobilenetv2", 0, COCO, 512, False, 0.380, 0.442),
    "hourglass_coco_512": ("hourglass_ae_coco_512x512-90af499f_20210920.pth", "hourglass", 0, COCO, 512, False, 0.613, 0.667),
}


def test_zoo_lists_the_19_published_models_with_their_settings_and_ap():
    models = zoo_models()
    assert list(models) == list(PUBLISHED)
    for name, (filename, family, width, keypoints, size, udp, ap_single, ap_multi) in PUBLISHED.items():
        model = models[name]
        assert (model.filename, model.family, model.width, model.keypoints) == (filename, family, width, keypoints)
        assert (model.input_size, model.use_udp, model.ap_single, model.ap_multi) == (size, udp, ap_single, ap_multi)
        assert model.sha256_prefix == filename.rsplit("-", 1)[1][:8]
    assert models["hrnet_w32_coco_512"].url == (
        "https://download.openmmlab.com/mmpose/bottom_up/hrnet_w32_coco_512x512-bcb8c247_20200816.pth"
    )
    assert models["hourglass_coco_512"].url == (
        "https://download.openmmlab.com/mmpose/bottom_up/hourglass_ae/hourglass_ae_coco_512x512-90af499f_20210920.pth"
    )


def test_the_four_earlier_names_keep_selecting_their_models():
    for old in ("hrnet_w32_coco", "hrnet_w48_coco", "hrnet_w48_mhp", "hrnet_w32_aic"):
        assert zoo_model(old).name == old + "_512"
    assert zoo.DEFAULT_MODEL == "hrnet_w32_coco" and zoo_model(zoo.DEFAULT_MODEL).name == "hrnet_w32_coco_512"


def test_local_checkpoints_with_an_official_name_or_prefix_are_known():
    assert zoo.zoo_model_for_file("/somewhere/higher_hrnet32_coco_640x640-a22fe938_20200712.pth").name == "higherhrnet_w32_coco_640"
    assert zoo.zoo_model_for_file("/somewhere/renamed.pth") is None
    assert zoo.zoo_model_for_sha256("a22fe938" + "0" * 56).name == "higherhrnet_w32_coco_640"
    assert zoo.zoo_model_for_sha256("f" * 64) is None


@pytest.mark.parametrize("name", list(zoo_models()))
def test_every_model_url_file_name_and_prefix_agree(name):
    model = zoo_model(name)
    assert model.name == name
    assert model.url.startswith("https://download.openmmlab.com/mmpose/bottom_up/")
    assert model.url.rsplit("/", 1)[1] == model.filename
    # Spec §2 naming: <stem>-<first 8 hex of sha256>_<YYYYMMDD>.pth
    stem, rest = model.filename.rsplit("-", 1)
    assert rest.startswith(model.sha256_prefix + "_") and rest.endswith(".pth")
    # The names say family, width, keypoint set and input size.
    assert name.startswith(model.family) and model.keypoints.name in name and f"_{model.input_size}" in name
    assert model.use_udp == name.endswith("_udp")
    if model.family in ("hrnet", "higherhrnet"):
        assert f"_w{model.width}_" in name
    if model.family == "resnet":
        assert name.startswith(f"resnet{model.width}_")


def test_zoo_models_returns_a_copy_callers_cannot_alter_the_zoo():
    zoo_models().clear()
    assert len(zoo_models()) == 19


def test_zoo_model_rejects_inconsistent_literal_entries():
    with pytest.raises(ValueError, match="prefix"):
        ZooModel("x", "https://h/x-12345678_1.pth", "abcdef01", COCO, 32, 0.1, 0.2, "x-12345678_1.pth")


def test_unknown_model_name_names_the_known_ones():
    with pytest.raises(ConfigError) as caught:
        zoo_model("hrnet_w64_coco")
    message = str(caught.value)
    assert "hrnet_w64_coco" in message
    for name in zoo_models():
        assert name in message


# --------------------------------------------------------------------------------------------
# Cache location


def test_cache_dir_honours_aepose_home(monkeypatch, tmp_path):
    monkeypatch.setenv("AEPOSE_HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home"
    model = zoo_model("hrnet_w48_mhp")
    assert checkpoint_path(model) == tmp_path / "home" / "checkpoints" / model.filename


def test_cache_dir_defaults_to_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("AEPOSE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "aepose"


def test_fetch_without_cache_argument_downloads_into_aepose_home(monkeypatch, tmp_path):
    monkeypatch.setenv("AEPOSE_HOME", str(tmp_path / "home"))
    model = _model_served_from(tmp_path, PAYLOAD)
    path = fetch_checkpoint(model)
    assert path == tmp_path / "home" / "checkpoints" / model.filename
    assert is_cached(model)


def test_download_url_is_the_official_one_unless_a_mirror_is_named(monkeypatch):
    model = zoo_model("hrnet_w32_aic")
    monkeypatch.delenv("AEPOSE_DOWNLOAD_BASE_URL", raising=False)
    assert zoo.download_url(model) == model.url
    monkeypatch.setenv("AEPOSE_DOWNLOAD_BASE_URL", "")
    assert zoo.download_url(model) == model.url
    for base in ("http://mirror.lan/aepose", "http://mirror.lan/aepose/"):
        monkeypatch.setenv("AEPOSE_DOWNLOAD_BASE_URL", base)
        assert zoo.download_url(model) == "http://mirror.lan/aepose/hrnet_w32_aic_512x512-77e2a98a_20210131.pth"


# --------------------------------------------------------------------------------------------
# Downloads


def test_download_streams_verifies_and_caches_with_progress_bar(tmp_path, capsys):
    cache = tmp_path / "cache"
    model = _model_served_from(tmp_path, PAYLOAD)
    assert not is_cached(model, cache)

    path = fetch_checkpoint(model, cache=cache, progress=DownloadBar())

    assert path == cache / "checkpoints" / model.filename
    assert path.read_bytes() == PAYLOAD
    assert is_cached(model, cache)
    full_hash = hashlib.sha256(PAYLOAD).hexdigest()
    sidecar = path.with_name(path.name + ".sha256")
    assert sidecar.read_text() == f"{full_hash}  {path.name}\n"  # `sha256sum -c` format
    assert _cache_files(cache) == [f"checkpoints/{model.filename}", f"checkpoints/{model.filename}.sha256"]
    assert model.filename in capsys.readouterr().err  # the bar goes to stderr, not stdout


def test_download_passes_a_timeout_to_the_opener(tmp_path):
    seen = {}

    def opener(url, timeout=None):
        seen["url"], seen["timeout"] = url, timeout
        return urllib.request.urlopen(url, timeout=timeout)

    model = _model_served_from(tmp_path, PAYLOAD)
    fetch_checkpoint(model, cache=tmp_path / "cache", opener=opener)
    assert seen["url"] == model.url
    assert seen["timeout"] and 0 < seen["timeout"] <= 120


def test_sha256_mismatch_deletes_the_download_and_names_both_prefixes(tmp_path):
    cache = tmp_path / "cache"
    model = _model_served_from(tmp_path, PAYLOAD, prefix="00000000")
    with pytest.raises(DownloadError) as caught:
        fetch_checkpoint(model, cache=cache)
    message = str(caught.value)
    assert "00000000" in message and PAYLOAD_PREFIX in message
    assert model.url in message
    assert not is_cached(model, cache)
    assert _cache_files(cache) == []


def test_cached_file_is_used_without_network_and_without_rehashing(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    model = _model_served_from(tmp_path, PAYLOAD)
    first = fetch_checkpoint(model, cache=cache)

    def no_hashing(path):
        raise AssertionError("a verified cached file must not be hashed again")

    monkeypatch.setattr(zoo, "_sha256_of_file", no_hashing)
    again = fetch_checkpoint(model, cache=cache, opener=_no_network)
    assert again == first and again.read_bytes() == PAYLOAD


def test_hand_placed_file_is_verified_once_then_trusted(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    model = _model_served_from(tmp_path, PAYLOAD)
    target = checkpoint_path(model, cache)
    target.parent.mkdir(parents=True)
    target.write_bytes(PAYLOAD)  # "put it into the cache dir", as the error message suggests

    hashed = []
    real_hash = zoo._sha256_of_file
    monkeypatch.setattr(zoo, "_sha256_of_file", lambda p: hashed.append(p) or real_hash(p))
    for _ in range(3):
        assert fetch_checkpoint(model, cache=cache, opener=_no_network) == target
    assert hashed == [target]


def test_wrong_or_replaced_cached_file_is_caught(tmp_path):
    cache = tmp_path / "cache"
    model = _model_served_from(tmp_path, PAYLOAD)
    target = fetch_checkpoint(model, cache=cache)

    target.write_bytes(PAYLOAD[:1000])  # truncated in place: new mtime, stale sidecar
    os.utime(target, ns=(1, 1_000_000_000))
    with pytest.raises(CheckpointError) as caught:
        fetch_checkpoint(model, cache=cache, opener=_no_network)
    message = str(caught.value)
    assert str(target) in message and model.sha256_prefix in message
    assert hashlib.sha256(PAYLOAD[:1000]).hexdigest()[:8] in message


@pytest.mark.parametrize(
    "error",
    [
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError("timed out"),
        http.client.IncompleteRead(b"partial", 1000),
    ],
    ids=["reset", "timeout", "incomplete-read"],
)
def test_failure_mid_stream_leaves_nothing_in_the_cache(tmp_path, error):
    cache = tmp_path / "cache"
    model = _model_served_from(tmp_path, PAYLOAD)
    responses: list = []
    with pytest.raises(DownloadError) as caught:
        fetch_checkpoint(model, cache=cache, opener=_opener_failing_midway(error, responses))
    message = str(caught.value)
    assert model.url in message and "--checkpoint" in message
    assert "\n" not in message
    assert _cache_files(cache) == []
    assert responses[0].closed


def test_keyboard_interrupt_mid_stream_propagates_and_leaves_nothing(tmp_path):
    cache = tmp_path / "cache"
    model = _model_served_from(tmp_path, PAYLOAD)
    with pytest.raises(KeyboardInterrupt):
        fetch_checkpoint(model, cache=cache, progress=DownloadBar(), opener=_opener_failing_midway(KeyboardInterrupt()))
    assert _cache_files(cache) == []


def test_connection_closed_early_is_caught_by_content_length(tmp_path):
    cache = tmp_path / "cache"
    model = _model_served_from(tmp_path, PAYLOAD)

    class ShortResponse(io.BytesIO):
        headers = {"Content-Length": str(len(PAYLOAD))}

    def opener(url, timeout=None):
        return ShortResponse(PAYLOAD[:5000])  # the server hung up after 5000 bytes

    with pytest.raises(DownloadError, match=f"5000 of {len(PAYLOAD)} bytes"):
        fetch_checkpoint(model, cache=cache, opener=opener)
    assert _cache_files(cache) == []


@pytest.mark.parametrize(
    "error",
    [
        urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution")),
        urllib.error.HTTPError("https://x", 404, "Not Found", {}, None),
        TimeoutError("timed out"),
    ],
    ids=["offline", "http-404", "connect-timeout"],
)
def test_offline_gives_a_download_error_naming_url_and_checkpoint_flag(tmp_path, error):
    cache = tmp_path / "cache"
    model = zoo_model("hrnet_w32_coco")

    def opener(url, timeout=None):
        raise error

    with pytest.raises(DownloadError) as caught:
        fetch_checkpoint(model, cache=cache, opener=opener)
    message = str(caught.value)
    assert model.url in message
    assert "--checkpoint" in message
    assert str(checkpoint_path(model, cache)) in message
    assert _cache_files(cache) == []


def test_missing_file_url_goes_through_the_real_urlopen_path(tmp_path):
    model = _model_served_from(tmp_path, PAYLOAD)
    (tmp_path / "server" / model.filename).unlink()
    with pytest.raises(DownloadError, match="--checkpoint"):
        fetch_checkpoint(model, cache=tmp_path / "cache")
    assert _cache_files(tmp_path / "cache") == []


# --------------------------------------------------------------------------------------------
# verify_sha256_prefix and resolve_checkpoint


def test_verify_sha256_prefix_on_local_files(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(PAYLOAD)
    assert verify_sha256_prefix(path, PAYLOAD_PREFIX) == hashlib.sha256(PAYLOAD).hexdigest()
    assert verify_sha256_prefix(path, PAYLOAD_PREFIX.upper()).startswith(PAYLOAD_PREFIX)
    with pytest.raises(CheckpointError, match=f"{PAYLOAD_PREFIX}, expected bcb8c247"):
        verify_sha256_prefix(path, "bcb8c247")
    with pytest.raises(CheckpointError, match="missing.pth"):
        verify_sha256_prefix(tmp_path / "missing.pth", "bcb8c247")


def test_resolve_local_checkpoint_never_touches_the_network(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    path = tmp_path / "my_weights.pth"
    path.write_bytes(b"not even a real checkpoint")
    assert resolve_checkpoint(None, path, opener=_no_network) == (path, None)
    assert resolve_checkpoint(None, str(path), opener=_no_network) == (path, None)
    assert resolve_checkpoint("hrnet_w32_aic", path, opener=_no_network) == (path, zoo_model("hrnet_w32_aic"))


def test_resolve_missing_local_checkpoint_names_it(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="nope.pth"):
        resolve_checkpoint(None, missing, opener=_no_network)
    with pytest.raises(CheckpointError, match="not a file"):
        resolve_checkpoint(None, tmp_path, opener=_no_network)


def test_resolve_defaults_to_w32_coco_from_the_zoo(tmp_path):
    requested = []

    def offline(url, timeout=None):
        requested.append(url)
        raise urllib.error.URLError("offline")

    with pytest.raises(DownloadError):
        resolve_checkpoint(None, None, cache=tmp_path, opener=offline)
    assert requested == [zoo_model("hrnet_w32_coco").url]

    requested.clear()
    with pytest.raises(DownloadError):
        resolve_checkpoint("hrnet_w48_mhp", None, cache=tmp_path, opener=offline)
    assert requested == [zoo_model("hrnet_w48_mhp").url]


def test_resolve_unknown_model_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="hrnet_w32_coco"):
        resolve_checkpoint("resnet50", None, cache=tmp_path, opener=_no_network)


# --------------------------------------------------------------------------------------------
# `aepose models`


def test_models_table_shows_published_ap_and_cache_state(tmp_path):
    mhp = zoo_model("hrnet_w48_mhp")
    cached = checkpoint_path(mhp, tmp_path)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")

    console = Console(record=True, width=400)
    console.print(models_table(cache=tmp_path, urls=True))
    lines = console.export_text().splitlines()

    def row(name: str) -> str:
        (line,) = [line for line in lines if line.split()[:1] == [name.strip()]]
        return line

    assert "COCO 17" in row("hrnet_w32_coco_512 ") and "0.654" in row("hrnet_w32_coco_512 ")
    assert "0.698" in row("hrnet_w32_coco_512 ") and " 512 " in row("hrnet_w32_coco_512 ")
    assert "MHP 16" in row("hrnet_w48_mhp_512") and "yes" in row("hrnet_w48_mhp_512") and str(cached) in row("hrnet_w48_mhp_512")
    assert "AIC 14" in row("hrnet_w32_aic_512") and "0.318" in row("hrnet_w32_aic_512")
    assert " no " in row("hrnet_w48_coco_512 ") and zoo_model("hrnet_w48_coco").url in row("hrnet_w48_coco_512 ")
    assert "CrowdPose 14" in row("higherhrnet_w32_crowdpose_512") and "640" in row("higherhrnet_w32_coco_640")
    assert row("higherhrnet_w32_coco_512_udp").split()[3:7] == ["512", "yes", "0.678", "-"]


def test_models_table_fits_80_columns_without_urls(tmp_path):
    console = Console(record=True, width=80)
    console.print(models_table(cache=tmp_path))
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    lines = text.splitlines()
    for model in zoo_models().values():
        # one line per model, nothing folded: the name and both APs on the same line
        (line,) = [line for line in lines if line.split()[:1] == [model.name]]
        multi = "-" if model.ap_multi is None else f"{model.ap_multi:.3f}"
        assert f"{model.ap_single:.3f}" in line and f" {multi} " in line and " no " in line
    assert "https://" not in text
    # Grouped by family: each family's heading, then its models.
    headings = [i for i, line in enumerate(lines) for label in ("HRNet", "HigherHRNet", "ResNet", "MobileNetV2", "Hourglass-AE") if line.strip() == label + ":"]
    assert len(headings) == 5 and headings == sorted(headings)


def test_models_table_of_one_family(tmp_path):
    console = Console(record=True, width=80)
    console.print(models_table(cache=tmp_path, family="higherhrnet"))
    text = console.export_text()
    names = [m.name for m in zoo_models().values()]
    shown = [n for n in names if any(line.split()[:1] == [n] for line in text.splitlines())]
    assert shown == [n for n in names if n.startswith("higherhrnet_")] and len(shown) == 7
