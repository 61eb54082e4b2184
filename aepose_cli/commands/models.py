"""`aepose models`: the published models, their AP and whether they are cached."""
from __future__ import annotations

from ..console import out_console


def run_models() -> None:
    from ..zoo import models_table

    out_console.print(models_table())
