"""The single-process engine against `--engine ray` with 1 and 2 workers, on the same 40 images.

    python benchmarks/bench_scale.py [--images 40] [--workers 1,2] [--batch-size 4] [--rounds 1] [--no-draw]
                                     [--ray-address ADDR]

Input: the first `--images` photos (sorted by name) of ../shared/data/coco-mini-val2017/val2017
(79 COCO val2017 photos, mostly 640x480; with more than 79 the list is repeated under new names).
Model: the official w32 layout with random weights (benchmarks/_common.full_size_model, saved as
a checkpoint file so each engine loads it as a user's run does): the real network's speed. The
reference's defaults: scale 1, flip test, batch size 4, annotated images and the COCO JSON
written, as `aepose folder` does.

Each engine runs in its own fresh process (so none inherits another's warm caches or threads);
with `--rounds N` the engines take turns N times (single, ray x1, ray x2, single, ...) and the
table gives each figure's median over the rounds, so that a slow spell of a shared machine
falls on every engine rather than on one. Each run reports where its time went: the process start and imports, the model load and
check, Ray's start-up (a local Ray instance, started and stopped by the run as the CLI does), the
wait for the first result, then per image the mean seconds of each stage (decode, preprocess,
network, grouping, draw, encode; stages overlap, so they add up to more than the wall time).
Throughput is images over the run's wall time (start-up included) and, for Ray, also over the
steady part (after the first result); Ray's overhead per image is its run time minus the single
engine's, over the images. On a shared machine, compare within one invocation only.

After the engines, one more process measures Ray Data's own cost on this machine: the same plan
shape (a task stage, a one-actor stage, a task stage, one row per block, Ray started and stopped
as the command does) with stages that do nothing, so no torch, no model, no images. Its start-up
and stop are what any `--engine ray` run pays before and after its first and last batch here, and
its idle session (Ray's own processes and Ray Data's actors alive, nothing running) is the share
of the cores they take while a run goes on. `--ray-address auto` (after `ray start --head`) runs
the Ray engines, and that measure, on a running cluster, as `aepose --ray-address auto` does.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import SHARED  # noqa: E402

PHOTOS = SHARED / "data" / "coco-mini-val2017" / "val2017"
STAGES = ("decode", "preprocess", "network", "grouping", "draw", "encode")


def _folder(root: Path, count: int) -> Path:
    photos = sorted(PHOTOS.glob("*.jpg"))
    folder = root / "images"
    folder.mkdir()
    for i in range(count):
        source = photos[i % len(photos)]
        name = source.name if i < len(photos) else f"{source.stem}_r{i // len(photos)}{source.suffix}"
        shutil.copy(source, folder / name)
    return folder


def _checkpoint(root: Path) -> Path:
    import torch

    from benchmarks._common import full_size_model

    path = root / "hrnet_w32_random.pth"
    torch.save({"state_dict": full_size_model(32).state_dict(), "meta": {}}, path)
    return path


# ---------------------------------------------------------------------------------------------
# one engine, in its own process


def child(args) -> None:
    t_start = time.perf_counter()
    from aepose_cli.cli.runtime import build_runner
    from aepose_cli.config import DrawConfig, EngineConfig, InferenceConfig, ModelChoice
    from aepose_cli.io.coco_json import CocoJsonWriter
    from aepose_cli.io.sources import list_images, read_image
    from aepose_cli.jobs.images import ImagesPlan, _ImageSink
    from aepose_cli.types import WorkItem

    t_imported = time.perf_counter()
    folder, out = Path(args.folder), Path(args.out)
    engine = EngineConfig() if args.engine == "single" else EngineConfig(engine="ray", workers=args.child_workers, ray_address=args.ray_address)
    config = InferenceConfig(batch_size=args.batch_size, device="cpu")
    runner = build_runner(ModelChoice(checkpoint=Path(args.checkpoint)), config, engine)
    t_loaded = time.perf_counter()
    paths = list_images(folder)
    keys = [p.name for p in paths]
    targets = {key: (None if args.no_draw else out / "drawn" / key) for key in keys}
    items = [WorkItem(index=i, key=key, load=(lambda p=path: read_image(p))) for i, (key, path) in enumerate(zip(keys, paths))]
    plan = ImagesPlan(
        entries=[(i, key, path) for i, (key, path) in enumerate(zip(keys, paths))], targets=targets, json_path=out / "poses.json",
        file_names={key: key for key in keys},
    )
    scope = plan.file_scope()
    with CocoJsonWriter(out / "poses.json", "dataset", runner.keypoints, 0.3, scope=scope) as writer:
        sink = _Clocked(_ImageSink(runner.keypoints, DrawConfig(), plan, writer, scope))
        times = runner.run(items, sink, keep_images=not args.no_draw)
    t_done = time.perf_counter()
    report = {
        "imports": t_imported - t_start,
        "model load": t_loaded - t_imported,
        "run": times.wall,
        "after run": t_done - t_loaded - times.wall,
        "overhead": times.overhead,
        "stages": {stage: times.totals.get(stage, 0.0) / max(times.items, 1) for stage in STAGES},
        "items": times.items,
        "written_at": sink.stamps,
        "failures": len(times.failures),
        "people": sum(1 for _ in json.loads((out / "poses.json").read_text())["annotations"]),
    }
    (out / "report.json").write_text(json.dumps(report))


class _Clocked:
    """The command's sink, noting when each result was written (steady-state throughput)."""

    def __init__(self, sink) -> None:
        self.sink = sink
        self.stamps: list[float] = []

    def write(self, item, image, result) -> None:
        self.sink.write(item, image, result)
        self.stamps.append(time.perf_counter())


# ---------------------------------------------------------------------------------------------
# Ray Data alone: the engine's plan shape with stages that do nothing


def _pass_through(batch):
    return batch


class _PassThroughActor:
    def __call__(self, batch):
        return batch


def floor_child(args) -> None:
    t_start = time.perf_counter()
    from aepose_cli.config import EngineConfig
    from aepose_cli.engines.ray import _rows_as_they_come
    from aepose_cli.engines.ray_session import ray, ray_session

    t_imported = time.perf_counter()
    rows = 10
    with ray_session(EngineConfig(engine="ray", ray_address=args.ray_address)):
        t_started = time.perf_counter()
        dataset = ray.data.from_items([{"seq": i} for i in range(rows)], override_num_blocks=rows)
        dataset = dataset.map_batches(_pass_through, batch_size=1, num_cpus=1)
        dataset = dataset.map_batches(_PassThroughActor, batch_size=1, concurrency=1, num_cpus=0)
        dataset = dataset.map_batches(_pass_through, batch_size=1, num_cpus=1)
        first = None
        for _ in _rows_as_they_come(dataset):
            first = first or time.perf_counter()
        t_rows = time.perf_counter()
        time.sleep(2.0)  # Ray Data's actor pool winds down
        busy_before, t0 = _cpu_seconds_by_process(), time.perf_counter()
        time.sleep(args.idle_seconds)
        busy_after = _cpu_seconds_by_process()
        used = sum(seconds - busy_before.get(pid, 0.0) for pid, seconds in busy_after.items())
        idle_cores = used / (time.perf_counter() - t0)
        t_idle_end = time.perf_counter()
    t_stopped = time.perf_counter()
    report = {
        "import": t_imported - t_start, "start": t_started - t_imported, "first": first - t_started,
        "rows": t_rows - t_started, "stop": t_stopped - t_idle_end, "idle_cores": idle_cores,
    }
    (Path(args.out) / "report.json").write_text(json.dumps(report))


def _cpu_seconds_by_process() -> dict[str, float]:
    """CPU seconds used so far by each process of the machine (Linux's /proc)."""
    hertz = os.sysconf("SC_CLK_TCK")
    seconds = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            seconds[pid] = (int(fields[11]) + int(fields[12])) / hertz
    return seconds


def _run_floor(root: Path, args, env: dict) -> None:
    out = root / "ray_floor"
    out.mkdir()
    cmd = [sys.executable, __file__, "--child", "floor", "--out", str(out), "--idle-seconds", str(args.idle_seconds)]
    if args.ray_address:
        cmd += ["--ray-address", args.ray_address]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"Ray Data alone: failed (exit {proc.returncode})\n{proc.stderr[-3000:]}", flush=True)
        return
    r = json.loads((out / "report.json").read_text())
    print(f"\nRay Data alone, the same plan shape with stages that do nothing (10 rows, one process):\n"
          f"  import Ray {r['import']:.1f} s, start Ray {r['start']:.1f} s, plan to first row {r['first']:.1f} s, "
          f"all rows {r['rows']:.1f} s, stop Ray {r['stop']:.1f} s\n"
          f"  the idle session ({args.idle_seconds:g} s, Ray's processes and Ray Data's actors alive): "
          f"{r['idle_cores']:.3f} of {os.cpu_count()} cores busy")


# ---------------------------------------------------------------------------------------------
# the table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--workers", default="1,2", help="Ray worker counts to run (comma-separated)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1, help="times each engine runs, in turns (medians reported)")
    parser.add_argument("--no-draw", action="store_true", help="JSON only (no annotated images)")
    parser.add_argument("--no-single", action="store_true", help="Ray runs only (compare with a single run made apart)")
    parser.add_argument("--ray-address", default=None, help="run the Ray engines on a running cluster (auto, HOST:PORT)")
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="how long to measure an idle Ray session")
    parser.add_argument("--child", dest="engine", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine is not None:
        floor_child(args) if args.engine == "floor" else child(args)
        return
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        root = Path(tmp)
        folder = _folder(root, args.images)
        checkpoint = _checkpoint(root)
        runs = ([] if args.no_single else [("single", 0)]) + [("ray", int(w)) for w in args.workers.split(",") if w.strip()]
        print(f"{args.images} images of {PHOTOS} (first by name), w32 random weights, scale 1 + flip, "
              f"batch size {args.batch_size}, {'JSON only' if args.no_draw else 'annotated images + JSON'}, "
              f"{os.cpu_count()} CPU(s), OMP_WAIT_POLICY={env['OMP_WAIT_POLICY']}, "
              f"Ray {'at ' + args.ray_address if args.ray_address else 'started by each run'}", flush=True)
        reports: dict[str, list[dict]] = {}
        for round_no, (engine, workers) in ((r, run) for r in range(args.rounds) for run in runs):
            name = "single" if engine == "single" else f"ray x{workers}"
            out = root / f"{name.replace(' ', '_')}_{round_no}"
            out.mkdir()
            cmd = [sys.executable, __file__, "--child", engine, "--child-workers", str(workers), "--folder", str(folder),
                   "--checkpoint", str(checkpoint), "--out", str(out), "--batch-size", str(args.batch_size)]
            if args.no_draw:
                cmd.append("--no-draw")
            if args.ray_address and engine == "ray":
                cmd += ["--ray-address", args.ray_address]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            process_wall = time.perf_counter() - t0
            if proc.returncode != 0:
                print(f"{name}: failed (exit {proc.returncode})\n{proc.stderr[-3000:]}", flush=True)
                continue
            report = json.loads((out / "report.json").read_text())
            report["process"] = process_wall
            reports.setdefault(name, []).append(report)
            print(f"  round {round_no + 1}, {name}: {process_wall:.1f} s", flush=True)
        if args.rounds > 1 and "single" in reports:
            for name, runs_of in reports.items():
                if name != "single":
                    ratios = [s["run"] / r["run"] for s, r in zip(reports["single"], runs_of)]
                    print(f"  {name} throughput vs single, round by round: {', '.join(f'{x:.2f}x' for x in ratios)}")
        _print_table({name: _median_report(runs_of) for name, runs_of in reports.items()}, args.images, args.batch_size)
        if any(engine == "ray" for engine, _ in runs):
            _run_floor(root, args, env)


def _median_report(runs: list[dict]) -> dict:
    """Each figure's median over the rounds (the steady-state one from the median round's stamps)."""
    from statistics import median

    if len(runs) == 1:
        return runs[0]
    by_run = sorted(runs, key=lambda r: r["run"])
    report = dict(by_run[len(by_run) // 2])
    for key in ("imports", "model load", "run", "after run", "process"):
        report[key] = median(r[key] for r in runs)
    report["overhead"] = {k: median(r["overhead"].get(k, 0.0) for r in runs) for k in report["overhead"]}
    report["stages"] = {k: median(r["stages"][k] for r in runs) for k in report["stages"]}
    return report


def _print_table(reports: dict, count: int, batch: int) -> None:
    if not reports:
        return
    names = list(reports)
    single = reports.get("single")
    rows = []

    def row(label, values):
        rows.append([label, *values])

    row("process wall (s)", [f"{r['process']:.1f}" for r in reports.values()])
    row("  imports (s)", [f"{r['imports']:.1f}" for r in reports.values()])
    row("  model load + check (s)", [f"{r['model load']:.1f}" for r in reports.values()])
    row("  run wall (s)", [f"{r['run']:.1f}" for r in reports.values()])
    row("    Ray start (s)", [f"{r['overhead'].get('Ray start', 0):.1f}" if r["overhead"] else "-" for r in reports.values()])
    row("    until 1st batch (s)", [f"{r['overhead'].get('until the first batch', 0):.1f}" if r["overhead"] else "-" for r in reports.values()])
    row("images/s (run)", [f"{count / r['run']:.3f}" for r in reports.values()])
    row("images/s (steady)", [f"{1 / _steady(r, batch):.3f}" for r in reports.values()])
    if single is not None:
        row("throughput vs single (run)", [f"{single['run'] / r['run']:.2f}x" for r in reports.values()])
        row("throughput vs single (steady)", [f"{_steady(single, batch) / _steady(r, batch):.2f}x" for r in reports.values()])
        row("overhead/image (s)", [f"{(r['run'] - single['run']) / count:+.3f}" for r in reports.values()])
    for stage in STAGES:
        row(f"{stage} (s/image)", [f"{r['stages'][stage]:.3f}" for r in reports.values()])
    row("images done / failed", [f"{r['items'] - r['failures']} / {r['failures']}" for r in reports.values()])
    row("people in JSON", [str(r["people"]) for r in reports.values()])
    widths = [max(len(str(line[i])) for line in rows + [["", *names]]) for i in range(len(names) + 1)]
    print()
    print("  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(["", *names], widths))))
    for line in rows:
        print("  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(line, widths))))


def _steady(report: dict, batch: int) -> float:
    """Seconds per image once results flow: from the first batch written to the last, over the
    images written after the first batch (the same measure for every engine)."""
    stamps = report["written_at"]
    if len(stamps) <= batch:
        return float("nan")
    return (stamps[-1] - stamps[batch - 1]) / (len(stamps) - batch)


if __name__ == "__main__":
    main()
