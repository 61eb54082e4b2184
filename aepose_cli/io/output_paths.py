"""Where outputs go: the one rule every output flag follows.

Absent → the default name next to the input (`clip.mp4` → `clip.pose.mp4`), a folder → the
default name inside it, a file path → that file, `--no-...` → off. Every command decides its
output paths through `resolve_output` before the model loads.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from .sources import OUTPUT_STEM_SUFFIX

OutputFlag = str | os.PathLike[str] | bool | None
# The sibling a streamed COCO JSON output is journaled in while it is written.
JOURNAL_SUFFIX = ".partial.jsonl"


# ---------------------------------------------------------------------------------------------
# Output paths


def default_output_name(input_path: str | os.PathLike[str], suffix: str) -> str:
    """`clip.mp4` → `clip.pose<suffix>`; a folder `run/` → `run.pose<suffix>`."""
    if not suffix.startswith("."):
        raise ValueError(f"suffix must start with '.', got {suffix!r}")
    absolute = Path(os.path.abspath(input_path))
    stem = absolute.name if absolute.is_dir() else absolute.stem
    return f"{stem}{OUTPUT_STEM_SUFFIX}{suffix}"


def resolve_output(
    flag_value: OutputFlag,
    input_path: str | os.PathLike[str],
    suffix: str,
    *,
    default_dir: str | os.PathLike[str] | None = None,
) -> Path | None:
    """Where an output goes, decided by the one rule every output flag follows.

    * `False` (the `--no-...` switch) → None: no output;
    * `None` (flag absent) or `True` (flag given without a value) → the default file name
      (`default_output_name`) next to the input, or in `default_dir` when given (for inputs
      that have no folder of their own, such as streams);
    * an existing folder, or a value ending in '/' → the default file name inside it;
    * anything else → that very file.

    Raises ConfigError if the output would overwrite the input itself.
    """
    if flag_value is False:
        return None
    name = default_output_name(input_path, suffix)
    if flag_value is None or flag_value is True:
        folder = Path(default_dir) if default_dir is not None else _folder_beside(input_path)
        output = folder / name
    else:
        text = os.fspath(flag_value)
        if text.endswith(("/", os.sep)) or Path(text).is_dir():
            output = Path(text) / name
        else:
            output = Path(text)
    if os.path.abspath(output) == os.path.abspath(input_path):
        raise ConfigError(f"{output}: output would overwrite the input")
    return output


# How every journal of this tool begins (its header's first key): the mark that it is ours.
# Here, beside the journal's name, so that the output plan reads it without importing the writer.
JOURNAL_MAGIC = b'{"aepose_journal":'


def journal_path(output: str | os.PathLike[str]) -> Path:
    """The journal of a streamed COCO JSON output: `OUTPUT.partial.jsonl` (`io.coco_json`)."""
    output = Path(output)
    return output.with_name(output.name + JOURNAL_SUFFIX)


def partial_name(path: Path) -> Path:
    """Where a failed video run keeps its frames: `clip.pose.mp4` -> `clip.pose.partial.mp4`
    (`io.encode`)."""
    return path.with_name(f"{path.stem}.partial{path.suffix or '.mp4'}")


def names_folder(value: str | os.PathLike[str]) -> bool:
    """True when an output flag's value means a folder: it exists as one, or ends in '/'."""
    text = os.fspath(value)
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


def _folder_beside(input_path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(input_path)).parent
