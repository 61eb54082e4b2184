"""The 19 published checkpoints: names, URLs, sha256 prefixes, and a download cache that is safe.

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
from .keypoints import AIC, COCO, CROWDPOSE, MHP, KeypointSet

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

    `family`: the architecture family (`model.FAMILIES`); `width`: its size parameter (the HRNet
    width W, branch channels W, 2W, 4W, 8W; the ResNet depth; 0 for MobileNetV2 and
    Hourglass-AE); `input_size` and `use_udp`: the published test config's `image_size` and
    `use_udp`, which the tensors do not say; `ap_single` and `ap_multi`: the published val AP
    with single-scale and [2, 1, 0.5] multi-scale flip test (`ap_multi` None where none was
    published); `num_parameters`: the learnable parameters of the architecture (as mmpose 0.29's
    builder makes it from the config), which tells a bare checkpoint of the same architecture
    apart from others; `aliases`: older names that still select it.
    """

    name: str
    url: str
    sha256_prefix: str
    keypoints: KeypointSet
    width: int
    ap_single: float
    ap_multi: float | None
    filename: str
    family: str = "hrnet"
    input_size: int = 512
    use_udp: bool = False
    num_parameters: int | None = None
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # The literal table below is typed by hand: catch a URL, file name and prefix that disagree.
        if not self.url.endswith("/" + self.filename):
            raise ValueError(f"{self.name}: url does not end with {self.filename}")
        if f"-{self.sha256_prefix}_" not in self.filename:
            raise ValueError(f"{self.name}: file name does not carry prefix {self.sha256_prefix}")
        if len(self.sha256_prefix) != 8 or not _is_lower_hex(self.sha256_prefix):
            raise ValueError(f"{self.name}: sha256 prefix must be 8 lower-case hex digits")

    @property
    def architecture(self) -> str:
        """The family and size in a few characters ("HRNet-W32", "ResNet-50", "MobileNetV2")."""
        from .config import FAMILIES

        label = FAMILIES.get(self.family, self.family)
        if self.family in ("hrnet", "higherhrnet"):
            return f"{label}-W{self.width}"
        if self.family == "resnet":
            return f"{label}-{self.width}"
        return label


def _is_lower_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


_BASE_URL = "https://download.openmmlab.com/mmpose/bottom_up/"


def _published(
    name: str, filename: str, keypoints: KeypointSet, family: str, width: int, ap: tuple[float, float | None],
    num_parameters: int, *, input_size: int = 512, use_udp: bool = False, aliases: tuple[str, ...] = (),
) -> ZooModel:
    """A zoo entry from the official file name (whose `-xxxxxxxx_` is the sha256 prefix)."""
    prefix = filename.rsplit("-", 1)[1].split("_", 1)[0]
    return ZooModel(
        name=name, url=_BASE_URL + filename, sha256_prefix=prefix, keypoints=keypoints, width=width,
        ap_single=ap[0], ap_multi=ap[1], filename=filename.rsplit("/", 1)[-1], family=family,
        input_size=input_size, use_udp=use_udp, num_parameters=num_parameters, aliases=aliases,
    )


# mmpose 0.29's bottom-up Associative Embedding model zoo: every checkpoint it published (the
# `*.yml` model index beside configs/body/2d_kpt_sview_rgb_img/associative_embedding/), in
# families. AP: COCO val2017 (AIC, MHP, CrowdPose: their own val/test sets), flip test, single
# scale / scales 2, 1, 0.5, as published. Parameter counts: the official configs as mmpose's
# `build_posenet` builds them (tests/fixtures/family/layouts.json.gz).
_PUBLISHED: tuple[ZooModel, ...] = (
    _published("hrnet_w32_coco_512", "hrnet_w32_coco_512x512-bcb8c247_20200816.pth", COCO, "hrnet", 32, (0.654, 0.698), 28_536_674, aliases=("hrnet_w32_coco",)),
    _published("hrnet_w48_coco_512", "hrnet_w48_coco_512x512-cf72fcdf_20200816.pth", COCO, "hrnet", 48, (0.665, 0.712), 63_596_578, aliases=("hrnet_w48_coco",)),
    _published("hrnet_w48_mhp_512", "hrnet_w48_mhp_512x512-85a6ab6f_20201229.pth", MHP, "hrnet", 48, (0.583, 0.592), 63_596_480, aliases=("hrnet_w48_mhp",)),
    _published("hrnet_w32_aic_512", "hrnet_w32_aic_512x512-77e2a98a_20210131.pth", AIC, "hrnet", 32, (0.303, 0.318), 28_536_476, aliases=("hrnet_w32_aic",)),
    _published("hrnet_w32_coco_512_udp", "hrnet_w32_coco_512x512_udp-91663bf9_20210220.pth", COCO, "hrnet", 32, (0.671, None), 28_536_674, use_udp=True),
    _published("hrnet_w48_coco_512_udp", "hrnet_w48_coco_512x512_udp-de08fd8c_20210222.pth", COCO, "hrnet", 48, (0.681, None), 63_596_578, use_udp=True),
    _published("higherhrnet_w32_coco_512", "higher_hrnet32_coco_512x512-8ae85183_20200713.pth", COCO, "higherhrnet", 32, (0.677, 0.706), 28_645_331),
    _published("higherhrnet_w32_coco_640", "higher_hrnet32_coco_640x640-a22fe938_20200712.pth", COCO, "higherhrnet", 32, (0.686, 0.706), 28_645_331, input_size=640),
    _published("higherhrnet_w48_coco_512", "higher_hrnet48_coco_512x512-60fedcbc_20200712.pth", COCO, "higherhrnet", 48, (0.686, 0.716), 63_827_139),
    _published("higherhrnet_w32_coco_512_udp", "higher_hrnet32_coco_512x512_udp-8cc64794_20210222.pth", COCO, "higherhrnet", 32, (0.678, None), 28_645_331, use_udp=True),
    _published("higherhrnet_w48_coco_512_udp", "higher_hrnet48_coco_512x512_udp-7cad61ef_20210222.pth", COCO, "higherhrnet", 48, (0.690, None), 63_827_139, use_udp=True),
    _published("higherhrnet_w32_aic_512", "higher_hrnet32_aic_512x512-9a674c33_20210130.pth", AIC, "higherhrnet", 32, (0.315, 0.323), 28_641_962),
    _published("higherhrnet_w32_crowdpose_512", "higher_hrnet32_crowdpose_512x512-1aa4a132_20201017.pth", CROWDPOSE, "higherhrnet", 32, (0.655, 0.661), 28_641_962),
    _published("resnet50_coco_512", "res50_coco_512x512-5521bead_20200816.pth", COCO, "resnet", 50, (0.466, 0.503), 34_004_066),
    _published("resnet50_coco_640", "res50_coco_640x640-2046f9cb_20200822.pth", COCO, "resnet", 50, (0.479, 0.525), 34_004_066, input_size=640),
    _published("resnet101_coco_512", "res101_coco_512x512-e0c95157_20200816.pth", COCO, "resnet", 101, (0.554, 0.603), 52_996_194),
    _published("resnet152_coco_512", "res152_coco_512x512-364eb38d_20200822.pth", COCO, "resnet", 152, (0.595, 0.660), 68_639_842),
    _published("mobilenetv2_coco_512", "mobilenetv2_coco_512x512-4d96e309_20200816.pth", COCO, "mobilenetv2", 0, (0.380, 0.442), 9_574_178),
    _published("hourglass_coco_512", "hourglass_ae/hourglass_ae_coco_512x512-90af499f_20210920.pth", COCO, "hourglass", 0, (0.613, 0.667), 138_863_560),
)


def zoo_models() -> dict[str, ZooModel]:
    """All published models by name, in table order (a fresh dict: callers may not alter the zoo)."""
    return {model.name: model for model in _PUBLISHED}


def zoo_model(name: str) -> ZooModel:
    """The published model called `name` (or one of its older names); ConfigError listing the
    known names otherwise."""
    for model in _PUBLISHED:
        if name == model.name or name in model.aliases:
            return model
    known = ", ".join(model.name for model in _PUBLISHED)
    raise ConfigError(f"unknown model {name!r} (known: {known}; `aepose models` lists them)")


def zoo_model_for_file(path: str | Path) -> ZooModel | None:
    """The published model whose official file name `path` has (a checkpoint downloaded by hand
    and passed with --checkpoint), or None."""
    name = Path(path).name
    return next((model for model in _PUBLISHED if model.filename == name), None)


def zoo_model_for_sha256(sha256: str) -> ZooModel | None:
    """The published model whose sha256 prefix the digest `sha256` starts with, or None."""
    return next((model for model in _PUBLISHED if sha256.startswith(model.sha256_prefix)), None)


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
