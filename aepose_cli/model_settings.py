"""What a checkpoint's tensors do not say: the input size, UDP and the keypoint set it runs with.

The architecture comes from the tensors (`model.spec_from_state`); three settings of mmpose's
test config do not: `data_cfg.image_size` (512 or 640: the canvas the image is resized to),
`test_cfg.use_udp` (Unbiased Data Processing: another resize, adjust and mapping back) and the
dataset (AIC and CrowdPose both have 14 keypoints). They are taken, first to last, from

1. the options (`--input-size`, `--udp/--no-udp`, `--keypoints`; `InferenceConfig.input_size`,
   `.use_udp` and the estimator's `keypoints`);
2. the zoo entry: `--model`, or a local checkpoint with an official file name or, when nothing
   else says, an official sha256 prefix (the file is hashed only then);
3. the checkpoint's `meta['config']`, the config text mmpose stores in the checkpoints it trains
   (read as Python syntax, never run: literal values of the relevant assignments only);
4. the family's defaults (512, no UDP, the only keypoint set with that many joints), unless the
   architecture is that of published checkpoints whose settings differ (the same HigherHRNet-W32
   COCO tensors were published for 512, 640 and 512 with UDP): then a one-line error names the
   options that decide.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from .config import DEFAULT_INPUT_SIZE
from .errors import CheckpointError, ConfigError
from .keypoints import KeypointSet, keypoint_set, keypoint_set_for
from .zoo import ZooModel, checkpoint_sha256, zoo_model_for_sha256, zoo_models

# A config text longer than this is not parsed (a real one is ~40 KB): a hostile checkpoint's
# megabytes of syntax cannot take the time or memory of the run.
MAX_CONFIG_CHARS = 1 << 20
# mmpose's bottom-up dataset classes, for configs without `dataset_info.dataset_name`.
_DATASET_TYPES = {
    "BottomUpCocoDataset": "coco",
    "BottomUpAicDataset": "aic",
    "BottomUpMhpDataset": "mhp",
    "BottomUpCrowdPoseDataset": "crowdpose",
}


@dataclass(frozen=True)
class DeclaredSettings:
    """What one source says; None where it is silent."""

    input_size: int | None = None
    use_udp: bool | None = None
    dataset: str | None = None


@dataclass(frozen=True)
class ModelSettings:
    """The settings a model runs with, and where each came from (for messages and docs)."""

    input_size: int
    use_udp: bool
    keypoints: KeypointSet
    sources: tuple[str, str, str]  # of input_size, use_udp, keypoints


# --------------------------------------------------------------------------------------------
# mmpose's config text, read without running it


def _literal(node: ast.AST):
    """The Python value of a literal node, a `dict(...)` call of keywords as a dict; anything
    else (names, calls, arithmetic) as the marker `_UNKNOWN`."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        return {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg is not None}
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        return _UNKNOWN


_UNKNOWN = object()


def _get(tree: dict, *keys):
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return None if tree is _UNKNOWN else tree


def settings_from_config_text(text: str) -> DeclaredSettings:
    """Input size, UDP and dataset from an mmpose config's text (`cfg.pretty_text`), by reading
    the literal values of its top-level `data_cfg`, `model`, `dataset_info` and `data`
    assignments. The text is parsed, never executed; what is unreadable or absent is None."""
    if not isinstance(text, str) or len(text) > MAX_CONFIG_CHARS:
        return DeclaredSettings()
    try:
        module = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return DeclaredSettings()
    assigned: dict[str, object] = {}
    for statement in module.body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and isinstance(statement.targets[0], ast.Name):
            name = statement.targets[0].id
            if name in ("data_cfg", "model", "dataset_info", "data"):
                try:
                    assigned[name] = _literal(statement.value)
                except (RecursionError, MemoryError):
                    assigned[name] = _UNKNOWN
    size = _get(assigned, "data_cfg", "image_size")
    if size is None:
        size = _get(assigned, "data", "test", "data_cfg", "image_size")
    input_size = size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None
    test_cfg = _get(assigned, "model", "test_cfg")
    use_udp = None
    if isinstance(test_cfg, dict):
        flag = test_cfg.get("use_udp", False)
        use_udp = flag if isinstance(flag, bool) else None
    dataset = _get(assigned, "dataset_info", "dataset_name") or _get(assigned, "data", "test", "dataset_info", "dataset_name")
    if dataset is None:
        dataset = _DATASET_TYPES.get(_get(assigned, "data", "test", "type"))  # type: ignore[arg-type]
    return DeclaredSettings(input_size, use_udp, dataset if isinstance(dataset, str) else None)


def settings_from_meta(meta: dict) -> DeclaredSettings:
    """What a checkpoint's `meta` says (its `config` text), or nothing."""
    text = meta.get("config") if isinstance(meta, dict) else None
    return settings_from_config_text(text) if isinstance(text, str) else DeclaredSettings()


def settings_from_zoo(entry: ZooModel) -> DeclaredSettings:
    return DeclaredSettings(entry.input_size, entry.use_udp, entry.keypoints.name)


# --------------------------------------------------------------------------------------------
# Resolution


def num_parameters(net) -> int:
    """Learnable parameters of a network: equal for equal architectures (`ZooModel.num_parameters`)."""
    return sum(p.numel() for p in net.parameters())


def published_alike(net) -> list[ZooModel]:
    """The published checkpoints with the architecture of `net` (family, keypoints, parameters)."""
    count = num_parameters(net)
    return [
        m for m in zoo_models().values()
        if m.family == net.family and m.keypoints.num_joints == net.num_joints and m.num_parameters == count
    ]


def check_zoo_entry_fits(entry: ZooModel, net, path: str | Path) -> None:
    """A zoo entry named for a checkpoint must describe its architecture."""
    if entry.family != net.family or entry.keypoints.num_joints != net.num_joints:
        from .config import FAMILIES

        raise CheckpointError(
            f"{path}: a {FAMILIES[net.family]} checkpoint with {net.num_joints} keypoints, but --model "
            f"{entry.name} is {entry.architecture} with {entry.keypoints.num_joints}"
        )


def resolve_settings(
    net,
    path: str | Path,
    meta: dict,
    zoo_entry: ZooModel | None,
    *,
    input_size: int | None = None,
    use_udp: bool | None = None,
    keypoints: str | KeypointSet | None = None,
    data: bytes | None = None,
) -> ModelSettings:
    """The settings `net` (built from the checkpoint at `path`, with `meta`) runs with: the
    options given (not None), else the zoo entry's, else its metadata's, else the defaults; a
    bare checkpoint of a published architecture whose settings differ is identified by its
    sha256 (`data`: its bytes, if already read), else a ConfigError names the options to give."""
    if zoo_entry is not None:
        check_zoo_entry_fits(zoo_entry, net, path)
    declared = settings_from_zoo(zoo_entry) if zoo_entry is not None else settings_from_meta(meta)
    source = f"zoo entry {zoo_entry.name}" if zoo_entry is not None else "checkpoint metadata"
    size, size_from = (input_size, "options") if input_size is not None else (declared.input_size, source)
    udp, udp_from = (use_udp, "options") if use_udp is not None else (declared.use_udp, source)
    if zoo_entry is None and (size is None or udp is None):
        alike = published_alike(net)
        undecided = _undecided(alike, size is None, udp is None)
        if undecided:
            entry = zoo_model_for_sha256(_sha256(path, data))
            if entry is not None and entry in alike:
                return resolve_settings(net, path, meta, entry, input_size=input_size, use_udp=use_udp, keypoints=keypoints)
            raise ConfigError(_ambiguous_message(path, alike, undecided))
    if size is None:
        size, size_from = DEFAULT_INPUT_SIZE, "default"
    if udp is None:
        udp, udp_from = False, "default"
    kps, kps_from = _keypoints(net, path, keypoints, declared.dataset, source)
    if kps.num_joints != net.num_joints:
        raise CheckpointError(
            f"{path}: checkpoint predicts {net.num_joints} keypoints but the keypoint set "
            f"'{kps.name}' has {kps.num_joints}"
        )
    return ModelSettings(size, udp, kps, (size_from, udp_from, kps_from))


def _keypoints(net, path, keypoints, dataset: str | None, source: str) -> tuple[KeypointSet, str]:
    if keypoints is not None:
        return (keypoint_set(keypoints) if isinstance(keypoints, str) else keypoints), "options"
    if dataset is not None:
        try:
            return keypoint_set(dataset), source
        except ConfigError:
            pass  # a dataset aepose has no keypoint set for: fall back to the joint count
    return keypoint_set_for(net.num_joints, str(path)), "joint count"


def _undecided(alike: list[ZooModel], size_open: bool, udp_open: bool) -> list[str]:
    """Which of the open settings the published checkpoints of this architecture disagree on."""
    open_ = []
    if size_open and len({m.input_size for m in alike}) > 1:
        open_.append("input_size")
    if udp_open and len({m.use_udp for m in alike}) > 1:
        open_.append("use_udp")
    return open_


def _ambiguous_message(path, alike: list[ZooModel], undecided: list[str]) -> str:
    published = ", ".join(f"{m.input_size}{' with UDP' if m.use_udp else ''}" for m in alike)
    options = []
    if "input_size" in undecided:
        options.append("--input-size " + "|".join(str(s) for s in sorted({m.input_size for m in alike})))
    if "use_udp" in undecided:
        options.append("--udp or --no-udp")
    return (
        f"{path}: a {alike[0].architecture} {alike[0].keypoints.label} checkpoint that neither its file name nor "
        f"its metadata describe, and that architecture was published for {published}: pass {' and '.join(options)}"
    )


def _sha256(path, data: bytes | None) -> str:
    if data is not None:
        import hashlib

        return hashlib.sha256(data).hexdigest()
    return checkpoint_sha256(path)
