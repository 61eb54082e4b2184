"""Small readers of a state dict's key grammar, shared by the architectures' `from_state_dict`."""
from __future__ import annotations

import re

import torch


def child_indices(state: dict[str, torch.Tensor], prefix: str) -> list[int]:
    """Sorted integer children `n` of keys `<prefix><n>.<...>` (the entries of a Sequential or
    ModuleList that hold tensors)."""
    rx = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in state if (m := rx.match(k))})


def has_prefix(state: dict[str, torch.Tensor], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in state)


def shape(state: dict[str, torch.Tensor], key: str) -> tuple[int, ...]:
    """The shape of `key`; KeyError names the key when it is missing."""
    return tuple(state[key].shape)
