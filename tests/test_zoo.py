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
from aepose_cli.keypoints import AIC, COCO, MHP
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


def test_zoo_lists_the_four_published_models_with_their_keypoint_sets():
    models = zoo_models()
    assert list(models) == ["hrnet_w32_coco", "hrnet_w48_coco", "hrnet_w48_mhp", "hrnet_w32_aic"]
    assert [(m.keypoints, m.keypoints.num_joints, m.width) for m in models.values()] == [
        (COCO, 17, 32), (COCO, 17, 48), (MHP, 16, 48), (AIC, 14, 32)
    ]
    assert [(m.sha256_prefix, m.ap_single, m.ap_multi) for m in models.values()] == [
        ("bcb8c247", 0.654, 0.698),
        ("cf72fcdf", 0.665, 0.712),
        ("85a6ab6f", 0.583, 0.592),
        ("77e2a98a", 0.303, 0.318),
    ]
    assert models["hrnet_w32_coco"].url == (
        "https://download.openmmlab.com/mmpose/bottom_up/hrnet_w32_coco_512x512-bcb8c247_20200816.pth"
    )


@pytest.mark.parametrize("name", list(zoo_models()))
def test_every_model_url_file_name_and_prefix_agree(name):
    model = zoo_model(name)
    assert model.name == name
    assert model.url.startswith("https://download.openmmlab.com/mmpose/bottom_up/")
    assert model.url.rsplit("/", 1)[1] == model.filename
    # Spec §2 naming: <stem>-<first 8 hex of sha256>_<YYYYMMDD>.pth
    stem, rest = model.filename.rsplit("-", 1)
    assert rest.startswith(model.sha256_prefix + "_") and rest.endswith(".pth")
    assert stem.startswith(name.rsplit("_", 1)[0])


def test_zoo_models_returns_a_copy_callers_cannot_alter_the_zoo():
    zoo_models().clear()
    assert len(zoo_models()) == 4


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
        (line,) = [line for line in lines if name in line]
        return line

    assert "COCO (17)" in row("hrnet_w32_coco") and "0.654" in row("hrnet_w32_coco")
    assert "0.698" in row("hrnet_w32_coco") and "W32" in row("hrnet_w32_coco")
    assert "MHP (16)" in row("hrnet_w48_mhp") and "yes" in row("hrnet_w48_mhp") and str(cached) in row("hrnet_w48_mhp")
    assert "AIC (14)" in row("hrnet_w32_aic") and "0.318" in row("hrnet_w32_aic")
    assert " no " in row("hrnet_w48_coco") and zoo_model("hrnet_w48_coco").url in row("hrnet_w48_coco")


def test_models_table_fits_80_columns_without_urls(tmp_path):
    console = Console(record=True, width=80)
    console.print(models_table(cache=tmp_path))
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    for model in zoo_models().values():
        # one line per model, nothing folded: the name and both APs on the same line
        (line,) = [line for line in text.splitlines() if model.name in line]
        assert f"{model.ap_single:.3f}" in line and f"{model.ap_multi:.3f}" in line and " no " in line
    assert "https://" not in text
