"""Shared test configuration. Paths to ../shared live in `paths.py`; markers in pyproject.toml."""
from __future__ import annotations
