"""Video pipeline throughput and memory (issue: end-to-end >= 90% of network-only on CPU).

    python benchmarks/bench_video.py throughput [--frames 100] [--rounds 1] [--model w32|tiny] [--no-flip] [--backend torch|onnxruntime|...]
    python benchmarks/bench_video.py memory [--model tiny] [--scale 0.5]

throughput: on the first N frames of opencv's vtest.avi (768x576), runs
  1. network-only: the frames' network passes alone (batched as the pipeline batches them,
     preprocessing done beforehand, outside the timing);
  2. end-to-end: `aepose video` in-process (decode, network, grouping, pose NMS, drawing,
     H.264 encoding, COCO JSON), all stages overlapping;
  and prints both frame rates and their ratio, from one run.
memory: peak RSS of `aepose video` in a fresh subprocess for 100 and for 400 frames.
The "w32" model is the official w32 layout with random weights (the real network's speed).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import SHARED, TINY_CHECKPOINT, full_size_model  # noqa: E402

VIDEO = SHARED / "data" / "opencv-vtest" / "vtest.avi"


def _checkpoint(model: str, folder: Path) -> Path:
    if model == "tiny":
        return TINY_CHECKPOINT
    import torch

    path = folder / "w32_random.pth"
    torch.save({"state_dict": full_size_model(32).state_dict(), "meta": {}}, path)
    return path


def throughput(args) -> None:
    import torch
    from rich.console import Console
    from rich.table import Table

    from aepose_cli.cli.video import run_video
    from aepose_cli.config import VideoOptions
    from aepose_cli.estimator import PoseEstimator
    from aepose_cli.io.decode import VideoSource

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = _checkpoint(args.model, tmp)
        est = PoseEstimator(checkpoint=ckpt, flip=not args.no_flip, batch_size=args.batch_size, backend=args.backend)
        with VideoSource(VIDEO) as src:
            rate = float(src.rate)
            frames = []
            for f in src:
                frames.append(f.image_bgr)
                if len(frames) == args.frames:
                    break
        prepared = [est.engine.prepare(img) for img in frames]
        torch.set_grad_enabled(False)
        # Warm-up: the first pass at a new batch shape builds the convolution primitives; neither
        # measurement below may pay for it alone.
        est.engine.infer_prepared(prepared[: args.batch_size])
        options = VideoOptions(
            out=str(tmp / "out.mp4"), json_out=str(tmp / "out.json"), end=(args.frames - 0.5) / rate
        )
        network_runs, e2e_runs = [], []
        # The two measurements alternate, `--rounds` times each, so a slow spell of a shared
        # machine hits both alike; the ratio is taken from their medians.
        for _ in range(args.rounds):
            # 1. network only, batched like the pipeline.
            t0 = time.perf_counter()
            for i in range(0, len(prepared), args.batch_size):
                est.engine.infer_prepared(prepared[i:i + args.batch_size])
            network_runs.append(time.perf_counter() - t0)
            # 2. end to end.
            t0 = time.perf_counter()
            run_video(str(VIDEO), est, _draw(), options, progress=False)
            e2e_runs.append(time.perf_counter() - t0)
        network_s = statistics.median(network_runs)
        e2e_s = statistics.median(e2e_runs)
        n_json = len(json.loads((tmp / "out.json").read_text())["images"])
        print("network-only runs (s):", " ".join(f"{t:.1f}" for t in network_runs), "| end-to-end runs (s):", " ".join(f"{t:.1f}" for t in e2e_runs))
    table = Table(title=f"vtest.avi, {args.frames} frames, model {args.model}, flip {not args.no_flip}, batch {args.batch_size}, backend {est.engine.backend_name}, torch threads {torch.get_num_threads()}")
    for col in ("network-only fps", "end-to-end fps", "end-to-end / network-only", "frames in JSON"):
        table.add_column(col, justify="right")
    table.add_row(f"{args.frames / network_s:.3f}", f"{args.frames / e2e_s:.3f}", f"{100 * network_s / e2e_s:.1f}%", str(n_json))
    Console(width=140).print(table)


def _draw():
    from aepose_cli.config import DrawConfig

    return DrawConfig()


def memory(args) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = _checkpoint(args.model, tmp)
        for frames in (100, 400):
            code = (
                "import resource, sys; from aepose_cli.cli.main import main\n"
                "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
                "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
            )
            cmd = [
                sys.executable, "-c", code, "video", str(VIDEO), "--checkpoint", str(ckpt), "--end", f"{(frames - 0.5) / 10.0}",
                "--scales", str(args.scale), "--no-flip", "--out", str(tmp / f"o{frames}.mp4"), "--json", str(tmp / f"o{frames}.json"),
            ]
            t0 = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            peak = int(next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("PEAK_KB")))
            n = len(json.loads((tmp / f"o{frames}.json").read_text())["images"])
            rows.append((frames, n, peak / 1024, time.perf_counter() - t0))
    table = Table(title=f"peak RSS of `aepose video` (model {args.model}, scale {args.scale}, no flip)")
    for col in ("frames asked", "frames in JSON", "peak RSS MiB", "wall s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r[0]), str(r[1]), f"{r[2]:.0f}", f"{r[3]:.0f}")
    table.add_row("400 vs 100", "", f"{100 * (rows[1][2] / rows[0][2] - 1):+.1f}%", "")
    Console(width=140).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("throughput")
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--model", choices=("w32", "tiny"), default="w32")
    p.add_argument("--no-flip", action="store_true")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--rounds", type=int, default=1, help="alternate network-only and end-to-end this many times; medians")
    p.add_argument("--backend", choices=("torch", "onnxruntime", "openvino", "auto"), default="torch", help="network backend (default: the CLI's default, torch)")
    m = sub.add_parser("memory")
    m.add_argument("--model", choices=("w32", "tiny"), default="tiny")
    m.add_argument("--scale", type=float, default=0.5)
    args = parser.parse_args()
    if args.what == "throughput":
        # The network runs here as in `aepose video`, which keeps malloc's freed buffers for the
        # next pass (the library leaves that to the process's owner).
        from aepose_cli import keep_freed_memory

        keep_freed_memory()
        throughput(args)
    else:
        memory(args)


if __name__ == "__main__":
    main()
