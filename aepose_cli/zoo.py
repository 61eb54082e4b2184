"""The four published checkpoints: names, URLs, sha256 prefixes, and a download cache that is safe.

The models are literal data (one frozen `ZooModel` each); nothing is registered at import
time and there is no mutable module state. Downloads follow three rules:

* A file only ever appears under its final name after its sha256 prefix matched (the
  prefix in the official file name is the first 8 hex digits of the file's sha256, and torch.hub's check
  silently skips these names, so we check ourselves). The bytes go to `<target>.part-<random>` in
  the same directory, are hashed while streaming, fsynced, then `os.replace`d (atomic). Any failure
  or Ctrl-C removes the partial file, so the cache never holds a half file under a real name.
* A verified file is not re-hashed on every run: next to it lives `<filename>.sha256`, a
  `sha256sum -c` compatible line whose own mtime is set to the checkpoint's mtime. A checkpoint
  whose sidecar is missing or whose mtime differs (placed by hand, replaced, rewritten) is hashed
  once more, and the sidecar rewritten. Presence alone would trust a hand-copied file that was
  never checked (the error messages invite users to drop files into the cache); hashing every run
  costs ~0.3-1 s for these 110-250 MB files; the sidecar costs one `stat`.
* `--checkpoint PATH` never touches the network.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from .types import Progress

from .errors import CheckpointError, ConfigError, DownloadError
from .io.filesystem import FileScope
from .keypoints import AIC, COCO, MHP, KeypointSet

DEFAULT_MODEL = "hrnet_w32_coco"
DOWNLOAD_TIMEOUT_S = 30.0  # per socket operation (connect, each read), not for the whole file
_CHUNK_BYTES = 1 << 20
_SIDECAR_SUFFIX = ".sha256"
_PART_MARKER = ".part-"
# A mirror of the official files (a cluster's own server, a local copy for an offline site):
# downloads come from `$AEPOSE_DOWNLOAD_BASE_URL` + the official file name, checked against the
# same sha256 prefix.
DOWNLOAD_BASE_URL_ENV = "AEPOSE_DOWNLOAD_BASE_URL"

Opener = Callable[..., Any]  # urllib.request.urlopen-like: opener(url, timeout=...) -> response


@dataclass(frozen=True)
class ZooModel:
    """One published checkpoint and what is needed to build, fetch and describe it.

    `width` is the HRNet width W (branch channels W, 2W, 4W, 8W); `ap_single` and
    `ap_multi` are the published val AP with single-scale and [2, 1, 0.5] multi-scale flip test.
    """

    name: str
    url: str
    sha256_prefix: str
    keypoints: KeypointSet
    width: int
    ap_single: float
    ap_multi: float
    filename: str

    def __post_init__(self) -> None:
        # The literal table below is typed by hand: catch a URL, file name and prefix that disagree.
        if not self.url.endswith("/" + self.filename):
            raise ValueError(f"{self.name}: url does not end with {self.filename}")
        if f"-{self.sha256_prefix}_" not in self.filename:
            raise ValueError(f"{self.name}: file name does not carry prefix {self.sha256_prefix}")
        if len(self.sha256_prefix) != 8 or not _is_lower_hex(self.sha256_prefix):
            raise ValueError(f"{self.name}: sha256 prefix must be 8 lower-case hex digits")


def _is_lower_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


_BASE_URL = "https://download.openmmlab.com/mmpose/bottom_up/"

_PUBLISHED: tuple[ZooModel, ...] = (
    ZooModel(
        name="hrnet_w32_coco",
        url=_BASE_URL + "hrnet_w32_coco_512x512-bcb8c247_20200816.pth",
        sha256_prefix="bcb8c247",
        keypoints=COCO,
        width=32,
        ap_single=0.654,
        ap_multi=0.698,
        filename="hrnet_w32_coco_512x512-bcb8c247_20200816.pth",
    ),
    ZooModel(
        name="hrnet_w48_coco",
        url=_BASE_URL + "hrnet_w48_coco_512x512-cf72fcdf_20200816.pth",
        sha256_prefix="cf72fcdf",
        keypoints=COCO,
        width=48,
        ap_single=0.665,
        ap_multi=0.712,
        filename="hrnet_w48_coco_512x512-cf72fcdf_20200816.pth",
    ),
    ZooModel(
        name="hrnet_w48_mhp",
        url=_BASE_URL + "hrnet_w48_mhp_512x512-85a6ab6f_20201229.pth",
        sha256_prefix="85a6ab6f",
        keypoints=MHP,
        width=48,
        ap_single=0.583,
        ap_multi=0.592,
        filename="hrnet_w48_mhp_512x512-85a6ab6f_20201229.pth",
    ),
    ZooModel(
        name="hrnet_w32_aic",
        url=_BASE_URL + "hrnet_w32_aic_512x512-77e2a98a_20210131.pth",
        sha256_prefix="77e2a98a",
        keypoints=AIC,
        width=32,
        ap_single=0.303,
        ap_multi=0.318,
        filename="hrnet_w32_aic_512x512-77e2a98a_20210131.pth",
    ),
)


def zoo_models() -> dict[str, ZooModel]:
    """All published models by name, in table order (a fresh dict: callers may not alter the zoo)."""
    return {model.name: model for model in _PUBLISHED}


def zoo_model(name: str) -> ZooModel:
    """The published model called `name`; ConfigError listing the known names otherwise."""
    models = zoo_models()
    try:
        return models[name]
    except KeyError:
        known = ", ".join(models)
        raise ConfigError(f"unknown model {name!r} (known: {known})") from None


# --------------------------------------------------------------------------------------------
# Cache layout


def cache_dir() -> Path:
    """`$AEPOSE_HOME` if set (and not empty), else `~/.cache/aepose`; read on every call, not cached."""
    home = os.environ.get("AEPOSE_HOME")
    if home:
        return Path(home).expanduser()
    return Path.home() / ".cache" / "aepose"


def download_url(model: ZooModel) -> str:
    """Where `model` is downloaded from: `$AEPOSE_DOWNLOAD_BASE_URL` (read on every call) followed
    by the official file name, or the official URL when it is unset or empty."""
    base = os.environ.get(DOWNLOAD_BASE_URL_ENV)
    if not base:
        return model.url
    return base.rstrip("/") + "/" + model.filename


def checkpoint_path(model: ZooModel, cache: Path | None = None) -> Path:
    """Where `model`'s checkpoint lives in the cache rooted at `cache` (default `cache_dir()`)."""
    root = Path(cache) if cache is not None else cache_dir()
    return root / "checkpoints" / model.filename


def is_cached(model: ZooModel, cache: Path | None = None) -> bool:
    """Whether the checkpoint file is present (only verified files are ever put there by us)."""
    return checkpoint_path(model, cache).is_file()


def _sidecar_path(target: Path) -> Path:
    return target.with_name(target.name + _SIDECAR_SUFFIX)


# --------------------------------------------------------------------------------------------
# Hashing and verification


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_sha256(path: str | Path) -> str:
    """The full sha256 of a checkpoint file: THE digest that names a model's weights (the
    provenance of a run's outputs, the cached ONNX graph of its backend).

    A zoo checkpoint's verified sidecar is taken when it is up to date (same mtime as the file,
    see the module's docstring), so a cached model is not hashed again on every run; any other
    file is read through. CheckpointError when it cannot be read.
    """
    path = Path(path)
    sidecar = _sidecar_path(path)
    try:
        if sidecar.stat().st_mtime_ns == path.stat().st_mtime_ns:
            recorded = sidecar.read_text(encoding="ascii").split()[0]
            if len(recorded) == 64 and _is_lower_hex(recorded):
                return recorded
    except (OSError, IndexError, UnicodeDecodeError):
        pass
    try:
        return _sha256_of_file(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc.strerror or exc})") from None


def verify_sha256_prefix(path: str | Path, prefix: str) -> str:
    """Stream `path` through sha256 and check it starts with `prefix`; returns the full hex digest.

    CheckpointError names the file and both prefixes when it does not match or cannot be read.
    """
    path = Path(path)
    try:
        hexdigest = _sha256_of_file(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc.strerror or exc})") from None
    expected = prefix.lower()
    if not hexdigest.startswith(expected):
        raise CheckpointError(
            f"{path}: sha256 starts with {hexdigest[:len(expected)]}, expected {expected} "
            "(wrong or corrupt file; delete it to download again)"
        )
    return hexdigest


def _sidecar_vouches_for(target: Path, prefix: str) -> bool:
    """True when the sidecar records a matching hash and the checkpoint is unchanged since."""
    sidecar = _sidecar_path(target)
    try:
        recorded = sidecar.read_text(encoding="ascii").split()[0]
        unchanged = sidecar.stat().st_mtime_ns == target.stat().st_mtime_ns
    except (OSError, IndexError, UnicodeDecodeError):
        return False
    return unchanged and recorded.startswith(prefix.lower())


def _cache_scope(target: Path) -> FileScope:
    """The model cache's own `FileScope`: the checkpoint file and its sidecar, nothing else."""
    scope = FileScope("model cache")
    scope.declare(target, "cached checkpoint")
    scope.declare(_sidecar_path(target), "its sha256 sidecar")
    return scope.seal()


def _write_sidecar(target: Path, hexdigest: str) -> None:
    """Record that `target` was verified; best effort (a read-only cache just re-hashes next time)."""
    try:
        mtime_ns = target.stat().st_mtime_ns
        with _cache_scope(target).atomic_file(_sidecar_path(target), "w", mtime_ns=mtime_ns) as handle:
            handle.write(f"{hexdigest}  {target.name}\n")
    except OSError:
        pass


def _ensure_verified(target: Path, model: ZooModel) -> None:
    """Hash a cached checkpoint only if no up-to-date sidecar says it was already verified."""
    if _sidecar_vouches_for(target, model.sha256_prefix):
        return
    hexdigest = verify_sha256_prefix(target, model.sha256_prefix)
    _write_sidecar(target, hexdigest)


# --------------------------------------------------------------------------------------------
# Download


def _download_error(url: str, reason: str, target: Path) -> DownloadError:
    return DownloadError(
        f"cannot download {url}: {reason}; download it elsewhere and pass --checkpoint PATH, "
        f"or put it at {target}"
    )


def _describe_network_error(exc: BaseException) -> str:
    """One short phrase for the network failures urllib and http.client raise."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        return getattr(reason, "strerror", None) or str(reason)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, http.client.IncompleteRead):
        return "connection closed mid-download"
    return str(exc) or type(exc).__name__


# What a network read may raise: every OSError (URLError, timeouts, resets), http.client's own
# protocol errors (IncompleteRead is not an OSError) and ValueError for a malformed URL.
_NETWORK_ERRORS = (OSError, http.client.HTTPException, ValueError)


def _content_length(response: Any) -> int | None:
    headers = getattr(response, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _stream_to_file(
    url: str, opener: Opener, sink: BinaryIO, target: Path, progress: Progress | None
) -> str:
    """Copy `url` into `sink` chunk by chunk, returning the sha256 hex digest of the bytes."""
    digest = hashlib.sha256()
    received = 0
    try:
        response = opener(url, timeout=DOWNLOAD_TIMEOUT_S)
    except _NETWORK_ERRORS as exc:
        raise _download_error(url, _describe_network_error(exc), target) from exc
    try:
        total = _content_length(response)
        shown = progress.task(target.name, total, "B") if progress is not None else nullcontext(lambda nbytes: None)
        with shown as advance:
            while True:
                try:
                    chunk = response.read(_CHUNK_BYTES)
                except _NETWORK_ERRORS as exc:
                    raise _download_error(url, _describe_network_error(exc), target) from exc
                if not chunk:
                    break
                digest.update(chunk)
                _write_chunk(sink, chunk, target)
                received += len(chunk)
                advance(len(chunk))
    finally:
        response.close()
    if total is not None and received != total:
        reason = f"connection closed after {received} of {total} bytes"
        raise _download_error(url, reason, target)
    return digest.hexdigest()


def _write_chunk(sink: BinaryIO, chunk: bytes, target: Path) -> None:
    try:
        sink.write(chunk)
    except OSError as exc:
        raise DownloadError(f"{target.parent}: cannot write download ({exc.strerror or exc})") from None


def _download(model: ZooModel, target: Path, progress: Progress | None, opener: Opener) -> None:
    """Stream `model`'s download URL to `target` via a same-directory temp file; nothing is left on failure."""
    scope = _cache_scope(target)
    try:
        scope.make_folders(target.parent)
    except OSError as exc:
        raise DownloadError(f"{target.parent}: cannot create cache directory ({exc.strerror or exc})") from None
    url = download_url(model)
    try:
        temp, sink = scope.open_temporary(target, "{name}" + _PART_MARKER + "{token}")
    except OSError as exc:
        raise DownloadError(f"{target.parent}: cannot write download ({exc.strerror or exc})") from None
    try:
        with sink:
            hexdigest = _stream_to_file(url, opener, sink, target, progress)
            if not hexdigest.startswith(model.sha256_prefix):
                raise DownloadError(
                    f"{url}: sha256 starts with {hexdigest[:8]}, expected "
                    f"{model.sha256_prefix}; the download is corrupt or was altered (not kept)"
                )
            sink.flush()
            os.fsync(sink.fileno())
        scope.commit(temp, target)
    finally:
        # BaseException included: Ctrl-C must not leave a .part file behind (it propagates as is).
        if scope.holds_temporary(temp):
            scope.discard(temp)
    _write_sidecar(target, hexdigest)


def fetch_checkpoint(
    model: ZooModel,
    *,
    progress: Progress | None = None,
    cache: Path | None = None,
    opener: Opener = urllib.request.urlopen,
) -> Path:
    """Path of `model`'s checkpoint in the cache (root `cache`, default `cache_dir()`), fetched if absent.

    A cached file is returned without network access (re-hashed only when its sidecar is missing or
    stale). `opener` is urlopen-compatible and injectable so that tests can simulate the network.
    `progress`: where the download shows how far it is (bytes); None: nowhere.
    """
    target = checkpoint_path(model, cache)
    if target.is_file():
        _ensure_verified(target, model)
        return target
    _download(model, target, progress, opener)
    return target


def resolve_checkpoint(
    model_name: str | None,
    checkpoint: str | Path | None,
    *,
    progress: Progress | None = None,
    cache: Path | None = None,
    opener: Opener = urllib.request.urlopen,
) -> tuple[Path, ZooModel | None]:
    """The checkpoint file to load and the zoo model it belongs to, if known.

    `--checkpoint PATH` wins and never touches the network (nor is it hashed: it may be a user's
    own fine-tuned weights); a `--model` given with it still says which architecture to build.
    Without a path the zoo model (default `hrnet_w32_coco`) is fetched into the cache.
    """
    model = zoo_model(model_name) if model_name is not None else None
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.exists():
            raise CheckpointError(f"{path}: no such checkpoint file")
        if not path.is_file():
            raise CheckpointError(f"{path}: is not a file")
        return path, model
    model = model if model is not None else zoo_model(DEFAULT_MODEL)
    return fetch_checkpoint(model, progress=progress, cache=cache, opener=opener), model
