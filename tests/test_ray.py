"""`--engine ray` end to end on a real local Ray cluster: the same JSON as the single engine.

One Ray instance is started per module (`ray.init(num_cpus=2)`, no dashboard); the commands run
as subprocesses that join it with `--ray-address`, so no test pays Ray's start-up twice. The
inputs are real photos of ../shared/data and the tiny checkpoint; a folder holds one broken
file, so batches with a failed item go through both engines. What is compared is the bytes of
the COCO JSON (image ids, annotation ids, order, every float), which is what a user keeps.

Videos: a folder of videos (one broken) on Ray, one task per video, gives the single engine's
JSON and MP4 files byte for byte.

Faults: a network actor SIGKILLed while it holds a batch must be restarted and that batch
retried, giving the same JSON; a driver SIGKILLed part-way leaves its journal, which
`--skip-existing` finishes (with the single engine: the journal is the same whichever engine
wrote it). To know what an actor holds, those runs wrap the actor class in the command's process
(`_start_logged`): each call is logged with the batch and the actor's pid as it starts and ends.
The victim is frozen first (SIGSTOP), its batch checked to be still unfinished, then killed:
a run that is fast never makes the test race its end.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import (
    BUS,
    COCO_IMAGES,
    DATA,
    MINI_VAL,
    MINI_VAL_ANN,
    MODEL,
    ZIDANE,
    assert_exit_code,
    assert_ok,
    assert_one_line_error,
    cli_command,
    cli_env,
    describe,
    finish,
    freeze_when,
    load_json,
    run_cli,
    run_main_after,
    wait_until,
)
from paths import needs_shared

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="needs Ray: pip install 'aepose-cli[ray]' (.ci/run installs it)")

pytestmark = [pytest.mark.cli, pytest.mark.ray, needs_shared]

# Small enough to be quick, large enough that a run lasts the few seconds the fault tests need.
# The network's threads are fixed because oneDNN rounds differently with another thread count
# (~1e-7 on scores): two workers on this machine would otherwise take one thread each.
SETTINGS = [*MODEL, "--no-flip", "--scales", "0.5", "--batch-size", "2", "--threads", "2"]
PHOTOS = [*sorted(COCO_IMAGES.glob("*.jpg")), ZIDANE, BUS, *sorted((MINI_VAL / "val2017").glob("*.jpg"))[:2]]
BROKEN = "03_broken.jpg"


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance for the module; the commands join it at this address."""
    import ray

    saved = os.environ.get("OMP_WAIT_POLICY")
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # the workers inherit it (see cli_helpers.cli_env)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    finally:
        if saved is None:
            os.environ.pop("OMP_WAIT_POLICY", None)
        else:
            os.environ["OMP_WAIT_POLICY"] = saved
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Eight photos and, in the middle of a batch, a file that is not an image."""
    root = tmp_path_factory.mktemp("ray")
    folder = root / "photos"
    folder.mkdir()
    for i, source in enumerate(PHOTOS[:3]):
        shutil.copy(source, folder / f"{i:02d}_{source.name}")
    (folder / BROKEN).write_text("not an image\n")
    for i, source in enumerate(PHOTOS[3:], start=4):
        shutil.copy(source, folder / f"{i:02d}_{source.name}")
    return folder


@pytest.fixture(scope="module")
def single_run(photos):
    """The single-process engine's outputs: what every Ray run must reproduce."""
    out = photos.parent / "single"
    proc = run_cli("folder", photos, *SETTINGS, "--out", out, "--json", out / "photos.json")
    return out, proc


def _ray(address: str, *extra) -> list[str]:
    return ["--engine", "ray", "--ray-address", address, *extra]


@needs_ray
def test_folder_on_ray_gives_the_single_engines_json_and_images(cluster, photos, single_run):
    single_out, single = single_run
    assert single.returncode == 1, describe(single)  # the broken file
    out = photos.parent / "ray2"
    proc = run_cli("folder", photos, *SETTINGS, *_ray(cluster, "--workers", "2"), "--out", out, "--json", out / "photos.json")
    assert proc.returncode == 1, describe(proc)
    assert "Traceback" not in proc.stderr
    # The same failure report, the same count; no line of Ray's own on the console.
    report = [line for line in proc.stderr.splitlines() if BROKEN in line]
    assert report == [line for line in single.stderr.splitlines() if BROKEN in line] and len(report) == 1, describe(proc)
    assert f"{len(PHOTOS)} image(s) done, 1 failed" in proc.stderr and "2 Ray worker(s)" in proc.stderr, describe(proc)
    ray_lines = [
        line for line in proc.stderr.splitlines()
        # Ray's C++ core ("[2026-12-02 17:10:24,406 E 15558 15558] core_worker.cc:..."), its Python
        # loggers ("2026-12-02 ... INFO worker.py:..."), forwarded worker output ("(raylet) ...").
        if re.match(r"^\[?\d{4}-\d\d-\d\d ", line) or "(raylet)" in line or " pid=" in line or ".py:" in line or ".cc:" in line
    ]
    assert not ray_lines, describe(proc)
    data = (out / "photos.json").read_bytes()
    assert data == (single_out / "photos.json").read_bytes()
    coco = json.loads(data)
    assert len(coco["images"]) == len(PHOTOS) and coco["annotations"], "people found, one image missing"
    drawings = sorted(p.name for p in out.iterdir() if p.suffix == ".jpg")
    assert drawings == sorted(p.name for p in single_out.iterdir() if p.suffix == ".jpg") and len(drawings) == len(PHOTOS)
    for name in drawings:
        assert (out / name).read_bytes() == (single_out / name).read_bytes(), name


def _journal_records(journal: Path) -> int:
    try:
        lines = journal.read_text().splitlines()[1:]
    except OSError:
        return 0
    return sum(1 for line in lines if line.endswith("}"))


# The command, with the actor class `kind` wrapped so that every call logs "start|end SEQS PID".
# The wrapper is defined in the command's __main__, so Ray ships it to the workers by value; the
# class it wraps is aepose's own, imported there as usual. Only Ray Data's map_batches is told to
# take the wrapper where aepose names the class: aepose's modules are left as they are.
_LOGGED = """
import os
import ray.data
import aepose_cli.engines.ray as engine

def _note(what, batch):
    seqs = ",".join(str(int(s)) for s in batch["seq"])
    with open({log!r}, "a") as handle:
        handle.write(f"{{what}} {{seqs}} {{os.getpid()}}\\n")

class Logged(engine.{kind}):
    def __call__(self, batch):
        _note("start", batch)
        answer = super().__call__(batch)
        _note("end", batch)
        return answer

_map_batches = ray.data.Dataset.map_batches

def map_batches(self, fn, *args, **kwargs):
    return _map_batches(self, Logged if fn is engine.{kind} else fn, *args, **kwargs)

ray.data.Dataset.map_batches = map_batches
from aepose_cli.cli.main import main
main({argv!r})
"""


def _start_logged(kind: str, log: Path, *args) -> subprocess.Popen:
    code = _LOGGED.format(log=str(log), kind=kind, argv=[str(a) for a in args])
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())


def _calls(log: Path) -> list[tuple[str, str, int]]:
    """(start|end, seqs, pid) of every logged call, in order."""
    if not log.exists():
        return []
    return [(what, seqs, int(pid)) for what, seqs, pid in (line.split() for line in log.read_text().splitlines() if line.count(" ") == 2)]


def _unfinished(log: Path) -> list[tuple[str, int]]:
    """(seqs, pid) of the calls that started and have not ended."""
    calls = _calls(log)
    return [(seqs, pid) for what, seqs, pid in calls if what == "start" and ("end", seqs, pid) not in calls]


def _kill_an_actor_holding_work(run: subprocess.Popen, log: Path, ready=lambda: True) -> tuple[str, int]:
    """Freeze an actor as soon as it holds an unfinished call (and `ready()`), check that the call
    is still unfinished, and kill it; an actor that finished in between is let go and the next
    call waited for. Returns the (seqs, pid) killed."""
    while True:
        wait_until(run, lambda: bool(_unfinished(log)) and ready(), "an actor holding an unfinished call")
        seqs, pid = _unfinished(log)[0]
        os.kill(pid, signal.SIGSTOP)
        if (seqs, pid) in _unfinished(log):  # frozen mid-call: its answer cannot come now
            os.kill(pid, signal.SIGKILL)
            return seqs, pid
        os.kill(pid, signal.SIGCONT)


def _retried_elsewhere(log: Path, seqs: str, dead: int) -> list[int]:
    """The other actors (pids) that ran the dead actor's call to its end."""
    calls = _calls(log)
    assert ("end", seqs, dead) not in calls, "the killed actor finished its call"
    return sorted({pid for what, s, pid in calls if what == "end" and s == seqs and pid != dead})


@needs_ray
def test_a_killed_network_actor_is_restarted_and_its_batch_retried(cluster, photos, single_run, tmp_path):
    single_out, _ = single_run
    json_out = photos.parent / "killed-actor.json"
    log = tmp_path / "calls.log"
    run = _start_logged("NetworkWorker", log, "folder", photos, *SETTINGS, *_ray(cluster, "--workers", "1"), "--no-images", "--json", json_out)
    try:
        seqs, dead = _kill_an_actor_holding_work(run, log)
    finally:
        proc = finish(run)
    assert_exit_code(proc, 1)  # the broken file, nothing else
    assert f"{len(PHOTOS)} image(s) done, 1 failed" in proc.stderr, describe(proc)
    assert _retried_elsewhere(log, seqs, dead), f"batch {seqs} of the killed actor {dead} was not retried: {_calls(log)}"
    assert json_out.read_bytes() == (single_out / "photos.json").read_bytes()


@needs_ray
def test_a_killed_driver_leaves_a_journal_that_skip_existing_finishes(cluster, photos, single_run):
    single_out, _ = single_run
    json_out = photos.parent / "killed-driver.json"
    journal = Path(f"{json_out}.partial.jsonl")
    run = subprocess.Popen(
        cli_command("folder", photos, *SETTINGS, *_ray(cluster), "--no-images", "--json", json_out),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
    )
    try:
        freeze_when(run, lambda: _journal_records(journal) >= 2, "2 journal records")  # the kill lands on an unfinished run
        done = _journal_records(journal)
        run.kill()
    finally:
        finish(run)
    assert 2 <= done < len(PHOTOS) and not json_out.exists()
    # Finished by the single engine: the journal is the same whichever engine wrote it.
    proc = run_cli("folder", photos, *SETTINGS, "--no-images", "--json", json_out, "--skip-existing")
    assert_exit_code(proc, 1)
    assert f"resuming: {done} of {len(PHOTOS) + 1} images already done" in proc.stderr, describe(proc)
    assert json_out.read_bytes() == (single_out / "photos.json").read_bytes()
    assert not journal.exists()


@needs_ray
def test_evaluate_on_ray_gives_the_same_results_and_metrics(cluster, tmp_path):
    files = {}
    for name, engine in (("single", []), ("ray", _ray(cluster, "--workers", "2"))):
        results, metrics = tmp_path / f"{name}.json", tmp_path / f"{name}.metrics.json"
        proc = run_cli(
            "evaluate", "--ann", MINI_VAL_ANN, "--images", MINI_VAL / "val2017", "--max-images", 6, *SETTINGS, *engine,
            "--out", results, "--metrics-json", metrics,
        )
        assert_ok(proc)
        files[name] = (results.read_bytes(), load_json(metrics))
    assert files["ray"] == files["single"]
    assert json.loads(files["ray"][0]), "the tiny model finds people in these photos"


@needs_ray
def test_higherhrnet_udp_on_ray_gives_the_single_engines_json(cluster, photos, tmp_path):
    """A family of two outputs with UDP (other geometry, grouping at heatmap resolution, DARK
    adjust, another mapping back), flip test on: the workers' aggregation and grouping from
    the network's raw outputs give the single engine's JSON byte for byte."""
    checkpoint = Path(__file__).parent / "fixtures" / "family" / "checkpoints" / "higherhrnet_coco.pth"
    settings = ["--checkpoint", checkpoint, "--device", "cpu", "--udp", "--scales", "0.5", "--batch-size", "2", "--threads", "2", "--no-images"]
    outputs = {}
    for name, engine in (("single", []), ("ray", _ray(cluster, "--workers", "2"))):
        out = tmp_path / f"{name}.json"
        proc = run_cli("folder", photos, *settings, *engine, "--json", out)
        assert proc.returncode == 1, describe(proc)  # the broken file
        outputs[name] = out.read_bytes()
    assert outputs["ray"] == outputs["single"]
    assert json.loads(outputs["ray"])["annotations"], "people found"


@needs_ray
def test_several_videos_on_ray_equal_the_single_engines(cluster, tmp_path):
    """One video per Ray task (written by the worker): the same frames, timestamps and poses,
    the same MP4s, and a broken file named once at the end while the others finish."""
    clips = tmp_path / "clips"
    clips.mkdir()
    for clip in (DATA / "mmpose-testdata" / "video" / "demo.mp4", DATA / "opencv-vtest" / "vtest.avi", DATA / "mmaction2-videos" / "test_video_structuralize.mp4"):
        shutil.copy(clip, clips / clip.name.replace("test_video_", ""))
    (clips / "notes.mp4").write_text("not a video\n")
    runs = {}
    for name, engine in (("single", []), ("ray", _ray(cluster, "--workers", "2"))):
        proc = run_cli("video", "clips", "--end", "0.3", "--out", f"{name}/", *SETTINGS, *engine, cwd=tmp_path)
        assert proc.returncode == 1, describe(proc)
        assert "Traceback" not in proc.stderr
        assert sum("notes.mp4" in line for line in proc.stderr.splitlines()) == 1, describe(proc)
        assert "3 video(s) done, 1 failed" in proc.stderr, describe(proc)
        runs[name] = [line for line in proc.stderr.splitlines() if "notes.mp4" in line]
    assert runs["ray"] == runs["single"]  # the same reason, named once
    names = sorted(p.name for p in (tmp_path / "single").iterdir())
    assert names == sorted(f"{stem}.pose.{ext}" for stem in ("demo", "vtest", "structuralize") for ext in ("json", "mp4"))
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == names
    for name in names:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "single" / name).read_bytes(), name
        if name.endswith(".json"):
            assert json.loads((tmp_path / "ray" / name).read_bytes())["images"], name


@needs_ray
def test_a_video_whose_worker_is_killed_is_redone_without_leftovers(cluster, tmp_path):
    """The video actor SIGKILLed mid-video: Ray restarts it, the video is done again from the
    start, and what is left is the single engine's MP4 and JSON, with no temporary beside them
    (the dead attempt's encoder file is the one the retry writes and renames)."""
    clip = tmp_path / "walk.avi"
    shutil.copy(DATA / "opencv-vtest" / "vtest.avi", clip)
    args = ["video", clip, "--end", "8", *SETTINGS]
    assert_ok(run_cli(*args, "--out", f"{tmp_path / 'single'}/"))
    out = tmp_path / "ray"
    log = tmp_path / "calls.log"
    run = _start_logged("TaskWorker", log, *args, "--out", f"{out}/", *_ray(cluster, "--workers", "1"))

    def encoder_file_written() -> bool:  # the encoder creates its file once its look-ahead is full
        return any(p.stat().st_size for p in out.glob("walk.pose.mp4.part-*.mp4")) if out.is_dir() else False

    try:
        seqs, dead = _kill_an_actor_holding_work(run, log, ready=encoder_file_written)
        assert not (out / "walk.pose.mp4").exists()  # the frozen task had not finished the video
    finally:
        proc = finish(run)
    assert_ok(proc)
    assert _retried_elsewhere(log, seqs, dead), f"the video task of the killed actor {dead} was not redone: {_calls(log)}"
    assert sorted(p.name for p in out.iterdir()) == ["walk.pose.json", "walk.pose.mp4"]
    for name in ("walk.pose.json", "walk.pose.mp4"):
        assert (out / name).read_bytes() == (tmp_path / "single" / name).read_bytes(), name


@needs_ray
def test_the_driver_gets_each_batch_as_soon_as_it_is_done(cluster, tmp_path):
    """The writer and the progress bar follow the cluster, not one batch behind it: the first
    row reaches the driver while the second is still being made (Ray Data's `iter_rows` would
    hold it back until the second arrived, and the second would wait here in vain)."""
    import ray.data

    from aepose_cli.engines.ray import _rows_as_they_come

    def wait_for_flag(batch, *, flag: str):
        # Defined here, so that Ray ships it by value (the workers cannot import this module).
        import numpy as np

        waited = []
        for seq in batch["seq"]:  # the second row waits for the first to be received
            # (a hang guard only: held back, the first row would never come, and the test fails)
            deadline = time.monotonic() + (300 if seq == 1 else 0)
            while not os.path.exists(flag) and time.monotonic() < deadline:
                time.sleep(0.05)
            waited.append(os.path.exists(flag))
        return {"seq": batch["seq"], "flag_seen": np.array(waited)}

    flag = tmp_path / "first-row-received"
    dataset = ray.data.from_items([{"seq": 0}, {"seq": 1}], override_num_blocks=2).map_batches(
        wait_for_flag, batch_size=1, fn_kwargs={"flag": str(flag)}, concurrency=1,
    )
    seen = []
    for row in _rows_as_they_come(dataset):
        seen.append((int(row["seq"]), bool(row["flag_seen"])))
        flag.touch()
    assert seen == [(0, False), (1, True)]


@needs_ray
def test_a_cluster_without_the_gpus_asked_for_is_one_line(cluster, photos, tmp_path):
    """Ray has started (joined) when this is found: none of its own lines may reach stderr."""
    on_gpus = [arg for arg in SETTINGS if arg not in ("--device", "cpu")]  # the device follows --gpus-per-worker
    proc = run_cli("folder", photos, *on_gpus, *_ray(cluster, "--gpus-per-worker", "1"), "--no-images", "--json", tmp_path / "x.json")
    assert_one_line_error(proc, "--gpus-per-worker 1", "need 1 GPU(s)", "has 0", code=7)
    assert list(tmp_path.iterdir()) == []


@needs_ray
def test_a_local_ray_started_by_the_command_gives_the_single_engines_json(photos, single_run):
    """Without --ray-address the command starts its own Ray (beside the module's) and stops it."""
    single_out, _ = single_run
    out = photos.parent / "ray_local"
    proc = run_cli("folder", photos, *SETTINGS, "--engine", "ray", "--no-images", "--json", out / "photos.json")
    assert proc.returncode == 1 and "1 Ray worker(s) on a local Ray" in proc.stderr, describe(proc)
    assert (out / "photos.json").read_bytes() == (single_out / "photos.json").read_bytes()


@needs_ray
def test_a_local_rays_workers_start_with_malloc_tuned_and_the_driver_keeps_its_environment():
    """The local Ray's processes inherit host_memory's tunables (added to the user's own), so a
    worker's network reuses its buffers; the command's own environment is left as it was."""
    code = """if True:
        import json, os
        from aepose_cli.config import EngineConfig
        from aepose_cli.engines.ray_session import ray, ray_session

        @ray.remote(num_cpus=0)
        def probe():
            from aepose_cli import host_memory
            return os.environ.get("GLIBC_TUNABLES"), host_memory.keep_freed_memory()

        with ray_session(EngineConfig(engine="ray")):
            worker = ray.get(probe.remote())
        print(json.dumps({"worker": worker, "driver": os.environ.get("GLIBC_TUNABLES")}))
    """
    env = {**cli_env(), "GLIBC_TUNABLES": "glibc.cpu.x86_shstk=off"}  # the user's, not about malloc
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, describe(proc)
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    (tunables, applied), driver = seen["worker"], seen["driver"]
    assert tunables.startswith("glibc.cpu.x86_shstk=off:") and "glibc.malloc.mmap_max=0" in tunables and applied, seen
    assert driver == "glibc.cpu.x86_shstk=off", seen


def test_engine_ray_without_ray_is_one_line(tmp_path):
    # sys.modules[name] = None is how Python spells "this package cannot be imported".
    shutil.copy(ZIDANE, tmp_path / "z.jpg")
    proc = run_main_after("import sys; sys.modules['ray'] = None", "folder", tmp_path, *SETTINGS, "--engine", "ray", "--json", tmp_path / "z.json")
    assert_one_line_error(proc, "--engine ray", "pip install 'aepose-cli[ray]'", code=7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["z.jpg"]


def test_the_single_engine_never_imports_ray(tmp_path):
    shutil.copy(ZIDANE, tmp_path / "z.jpg")
    proc = run_main_after(
        "import sys, aepose_cli", "folder", tmp_path, *SETTINGS, "--no-images", "--json", tmp_path / "z.json",
        epilogue="print('ray modules:', sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))",
    )
    assert_ok(proc)
    assert "ray modules: []" in proc.stdout, describe(proc)


def test_ray_flags_need_engine_ray(tmp_path):
    proc = run_cli("folder", tmp_path, *SETTINGS, "--workers", "2", "--ray-address", "auto")
    assert_one_line_error(proc, "--workers, --ray-address", "--engine ray", code=2)
