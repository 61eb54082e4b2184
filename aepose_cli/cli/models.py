"""`aepose models`: the published models, their AP and whether they are cached."""
from __future__ import annotations

import click

from .console import DownloadBar, models_table, out_console


def run_models(*, urls: bool = False, family: str | None = None) -> int:
    """The zoo table, grouped by family (or one `family`); narrow enough for an 80-column
    terminal unless `urls` adds URL and path."""
    out_console.print(models_table(urls=urls, family=family))
    return 0


def run_download(name: str) -> int:
    """Fetch a zoo model into the cache (verified) and print its path on stdout."""
    from ..zoo import fetch_checkpoint, zoo_model

    path = fetch_checkpoint(zoo_model(name), progress=DownloadBar())
    click.echo(str(path))
    return 0
