"""Downloads at the command line: `aepose models --download` and a first run without
`--checkpoint`, against a local HTTP server on 127.0.0.1 (no test reaches the internet).

`AEPOSE_DOWNLOAD_BASE_URL` points the zoo at a mirror (README, docs/commands.md): the official
file names, under another folder URL. Offline is a port on 127.0.0.1 that is bound but not
listening (the connection is refused at once); a mirror that serves other bytes under the
official name fails the sha256 check. Both must give exit 4 in one line, through the installed
console script, with nothing left in the cache.

A successful download needs bytes whose sha256 starts with the prefix in the file name, which
for the published files means the published checkpoints themselves (100+ MB, not in the test
data); so the success case runs the command in this process (`run_in_process`) with one more zoo
entry whose name carries the prefix of a small file, served by the same local server.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import shutil
import socket
import threading
from pathlib import Path

import pytest

from aepose_cli import zoo
from aepose_cli.keypoints import COCO

from cli_helpers import ZIDANE, assert_error_after_work, assert_ok, assert_one_line_error, describe, run_console_script, run_in_process

pytestmark = pytest.mark.cli

W32 = zoo.zoo_model("hrnet_w32_coco")


class _Handler(http.server.SimpleHTTPRequestHandler):
    requested: list[str]

    def do_GET(self):  # noqa: N802 - the standard library's name
        self.requested.append(self.path)
        super().do_GET()

    def log_message(self, *args):  # quiet: the test output is the command's
        pass


@contextlib.contextmanager
def mirror(folder: Path):
    """A local HTTP server of `folder`; yields (base URL, the paths requested)."""
    requested: list[str] = []
    handler = functools.partial(type("Handler", (_Handler,), {"requested": requested}), directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mirror/", requested
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def refused_port():
    """A base URL on 127.0.0.1 whose port is bound but not listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/mirror/"


def cache_files(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()) if home.exists() else []


@pytest.mark.parametrize("command", [["models", "--download", "hrnet_w32_coco"], ["image", "photo.jpg"]], ids=["models-download", "first-run"])
def test_offline_download_is_exit_4_in_one_line(tmp_path, command):
    if command[0] == "image":
        if not ZIDANE.is_file():
            pytest.skip("needs the shared test data")
        shutil.copy(ZIDANE, tmp_path / "photo.jpg")
    home = tmp_path / "home"
    with refused_port() as base:
        proc = run_console_script(*command, cwd=tmp_path, env_extra={"AEPOSE_HOME": str(home), "AEPOSE_DOWNLOAD_BASE_URL": base})
    line = assert_one_line_error(proc, f"cannot download {base}{W32.filename}", "--checkpoint", code=4)
    assert "refused" in line.lower(), line
    assert proc.stdout == ""
    assert cache_files(home) == []  # no partial download under any name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["home", *(["photo.jpg"] if command[0] == "image" else [])])


def test_altered_bytes_on_the_mirror_are_exit_4_and_not_kept(tmp_path):
    served = tmp_path / "served" / "mirror"
    served.mkdir(parents=True)
    (served / W32.filename).write_bytes(b"not the checkpoint" * 1000)
    home = tmp_path / "home"
    with mirror(served.parent) as (base, requested):
        proc = run_console_script("models", "--download", "hrnet_w32_coco", cwd=tmp_path, env_extra={"AEPOSE_HOME": str(home), "AEPOSE_DOWNLOAD_BASE_URL": base})
    actual = hashlib.sha256((served / W32.filename).read_bytes()).hexdigest()[:8]
    # The download's progress bar may have been drawn before the one error line.
    assert_error_after_work(proc, f"{base}{W32.filename}", f"sha256 starts with {actual}", f"expected {W32.sha256_prefix}", code=4)
    assert requested == [f"/mirror/{W32.filename}"]
    assert cache_files(home) == []


def test_download_from_a_mirror_is_verified_cached_and_its_path_printed(tmp_path, monkeypatch):
    payload = os.urandom(300_000)
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    filename = f"hrnet_test_512x512-{prefix}_20240101.pth"
    served = tmp_path / "served" / "mirror"
    served.mkdir(parents=True)
    (served / filename).write_bytes(payload)
    extra = zoo.ZooModel(
        name="hrnet_test", url=f"https://download.invalid/{filename}", sha256_prefix=prefix, keypoints=COCO,
        width=32, ap_single=0.5, ap_multi=0.6, filename=filename,
    )
    monkeypatch.setattr(zoo, "_PUBLISHED", (*zoo._PUBLISHED, extra))
    home = tmp_path / "home"
    with mirror(served.parent) as (base, requested):
        env = {"AEPOSE_HOME": str(home), "AEPOSE_DOWNLOAD_BASE_URL": base}
        proc = run_in_process("models", "--download", "hrnet_test", env_extra=env)
        assert_ok(proc)
        again = run_in_process("models", "--download", "hrnet_test", env_extra=env)  # cached: no second request
        assert_ok(again)
        listing = run_in_process("models", "--urls", env_extra=env)
    target = home / "checkpoints" / filename
    assert proc.stdout.strip() == again.stdout.strip() == str(target), describe(proc)
    assert target.read_bytes() == payload
    assert requested == [f"/mirror/{filename}"]
    assert cache_files(home) == sorted([f"checkpoints/{filename}", f"checkpoints/{filename}.sha256"])
    assert listing.stdout.count(base) == len(zoo.zoo_models()), describe(listing)  # --urls shows where downloads come from
