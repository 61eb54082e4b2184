"""Network backends side by side, and `aepose image` end to end against the reference's figure.

    python benchmarks/bench_backends.py [--models w32,w48,higherhrnet_w32,resnet50] [--repeat 3]
                                        [--threads N] [--no-e2e] [--reference-cmd CMD]

1. network: every installed backend (torch eager NCHW, torch eager channels_last, ONNX Runtime,
   OpenVINO) on official layouts with random weights (the real networks' speed): HRNet w32/w48
   (`w32`, `w48` as before), and by name any of `_common.PUBLISHED_LAYOUTS` (HigherHRNet W32,
   ResNet-50, ...: built by shape from the published layout; every raw output of the head),
   for the input of a 512x512 and of a 640x480 image (512x512 and 512x704 after resize-align),
   flip test (each image is 2 samples), 1 and 2 images per pass; one warm-up call each, then the
   backends take turns for `--repeat` rounds (medians), so load on a shared machine hits all alike; ratios to torch eager from the same run; max abs difference of the
   raw outputs against torch eager.
2. end to end: `PoseEstimator.predict_batch` (read, preprocess, network, grouping, pose NMS; the
   work of `aepose image` minus drawing) on two crowded 640x480 photos of ../shared/data, w32,
   single scale + flip, one batch, per image, for every installed backend (taking turns), against
   the reference: `--reference-cmd CMD` times mmpose 0.29 in the same run (before and after
   aepose's rounds), else the issue's 4.84 s per image from another day stands in.

The machine may be shared: compare ratios within one run, not absolute times across runs.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks._common import PUBLISHED_LAYOUTS, SHARED, full_size_model, published_model  # noqa: E402

REFERENCE_PER_IMAGE_S = 4.84  # mmpose 0.29, w32, single scale + flip, issue 9
PHOTOS = (
    SHARED / "data" / "mmpose-testdata" / "crowdpose" / "103319.jpg",  # 640x480, crowd
    SHARED / "data" / "coco-mini-val2017" / "val2017" / "000000126107.jpg",  # 640x480, 6 annotated people
)
CANVASES = {"512x512": (512, 512), "640x480": (640, 480)}  # image (w, h)


def interleaved(subjects: dict, call, rounds: int) -> dict[str, list[float]]:
    """Seconds of `call(subject)` for every subject, taking turns for `rounds` rounds."""
    runs: dict[str, list[float]] = {name: [] for name in subjects}
    for _ in range(rounds):
        for name, subject in subjects.items():
            t0 = time.perf_counter()
            call(subject)
            runs[name].append(time.perf_counter() - t0)
    return runs


def _network_input_hw(image_wh: tuple[int, int]) -> tuple[int, int]:
    from aepose_cli.preprocess import image_geometry

    w, h = image_geometry(image_wh[0], image_wh[1], (1.0,)).inputs[0].size_wh
    return h, w


def _backends(net, threads: int, folder: Path) -> dict:
    """name -> callable `[N,3,H,W] -> [outputs]`, for every installed runtime."""
    from aepose_cli.backends import create_backend, is_installed
    from aepose_cli.backends.onnx_export import export_onnx, output_names

    names = output_names(net.spec)
    out = {"torch eager": create_backend("torch", net, device=torch.device("cpu"))}
    net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def channels_last(x):
        return [o.contiguous() for o in net_cl.raw_outputs(x.contiguous(memory_format=torch.channels_last))]

    out["torch channels_last"] = channels_last
    onnx_path = folder / "net.onnx"
    t0 = time.perf_counter()
    export_onnx(net, onnx_path)
    print(f"  ONNX export: {time.perf_counter() - t0:.1f} s, {onnx_path.stat().st_size / 2**20:.0f} MiB", flush=True)
    if is_installed("onnxruntime"):
        from aepose_cli.backends.onnxruntime_backend import OnnxRuntimeBackend

        out["onnxruntime"] = OnnxRuntimeBackend(onnx_path, device=torch.device("cpu"), threads=threads, output_names=names)
    if is_installed("openvino"):
        from aepose_cli.backends.openvino_backend import OpenVinoBackend

        out["openvino"] = OpenVinoBackend(onnx_path, threads=threads, output_names=names)
    return out


def _network(name: str):
    """`w32`/`w48`: HRNet-AE as before; else a published layout by name (`PUBLISHED_LAYOUTS`)."""
    if name in ("w32", "w48"):
        return full_size_model(int(name[1:]))
    return published_model(name)


def network_table(args, console) -> None:
    from rich.table import Table

    for model in args.models:
        table = Table(title=f"network {model} (random weights, official layout), fp32, flip, {args.threads} threads, median of {args.repeat}")
        for col in ("canvas", "input", "images/pass", "backend", "s per pass", "vs torch eager", "max abs diff"):
            table.add_column(col, justify="right")
        net = _network(model)
        with tempfile.TemporaryDirectory() as tmp:
            backends = _backends(net, args.threads, Path(tmp))
            for canvas, image_wh in CANVASES.items():
                h, w = _network_input_hw(image_wh)
                for images in (1, 2):
                    x = torch.randn(images, 3, h, w, generator=torch.Generator().manual_seed(0))
                    x = torch.cat([x, torch.flip(x, [3])])  # flip test: originals then mirrors
                    # One warm-up each, then the backends take turns `--repeat` times, so a slow
                    # spell of a shared machine hits every backend alike; medians per backend.
                    outputs = {name: fn(x) for name, fn in backends.items()}
                    runs = interleaved(backends, lambda fn, x=x: fn(x), args.repeat)
                    ref = outputs["torch eager"]
                    base = statistics.median(runs["torch eager"])
                    for name in backends:
                        t = statistics.median(runs[name])
                        diff = max(float((got - want).abs().max()) for got, want in zip(outputs[name], ref))
                        table.add_row(canvas, f"{x.shape[0]}x3x{h}x{w}", str(images), name, f"{t:.3f}", f"{t / base:.2f}", f"{diff:.1e}")
                        print(f"  {model} {canvas} {images} {name}: {t:.3f} s ({t / base:.2f}), diff {diff:.1e}", flush=True)
            del backends
        console.print(table)


def reference_per_image(command: str | None) -> tuple[float, str]:
    """Seconds per image of the reference, and where the figure comes from.

    With `--reference-cmd`, the command (e.g. mmpose 0.29 timed in its own environment on the
    same photos and weights) runs now and must print `REFERENCE_PER_IMAGE_S=<seconds>`; else the
    issue's figure from another day is used, which only means something on the same machine.
    """
    if not command:
        return REFERENCE_PER_IMAGE_S, "issue 9's figure"
    import re
    import subprocess

    out = subprocess.run(command, shell=True, capture_output=True, text=True, check=True).stdout
    found = re.findall(r"REFERENCE_PER_IMAGE_S=([0-9.]+)", out)
    if not found:
        raise SystemExit(f"--reference-cmd printed no REFERENCE_PER_IMAGE_S=<seconds>:\n{out[-2000:]}")
    return float(found[-1]), "measured in this run"


def e2e_table(args, console) -> None:
    import cv2
    from rich.table import Table

    from aepose_cli.backends import BACKENDS, is_installed
    from aepose_cli.estimator import PoseEstimator

    images = [cv2.imread(str(p)) for p in PHOTOS]
    assert all(img is not None and img.shape[:2] == (480, 640) for img in images), "the two 640x480 photos"
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["AEPOSE_HOME"] = str(Path(tmp) / "home")  # the ONNX cache of this run only
        ckpt = Path(tmp) / "w32_random.pth"
        torch.save({"state_dict": full_size_model(32).state_dict(), "meta": {}}, ckpt)
        estimators = {
            backend: PoseEstimator(checkpoint=ckpt, backend=backend, threads=args.threads)
            for backend in BACKENDS if is_installed(backend)
        }
        last = {name: est.predict_batch(images) for name, est in estimators.items()}  # warm-up
        # The reference before and after aepose's rounds: their mean stands for the same spell.
        ref_before, source = reference_per_image(args.reference_cmd)
        print(f"  reference: {ref_before:.3f} s/image ({source})", flush=True)

        def run(est):
            last[est.engine.backend_name] = est.predict_batch(images)

        runs = interleaved(estimators, run, args.repeat)
        ref_after, _ = reference_per_image(args.reference_cmd)
        print(f"  reference again: {ref_after:.3f} s/image", flush=True)
    reference = (ref_before + ref_after) / 2
    table = Table(title=(
        f"end to end, w32 random weights, single scale + flip, both photos in one batch, {args.threads} threads, "
        f"median of {args.repeat} rounds; reference {reference:.3f} s/image ({source})"
    ))
    for col in ("backend", "s per image", "of which network", "grouping + NMS", "people", "vs reference"):
        table.add_column(col, justify="right")
    for name in estimators:
        t = statistics.median(runs[name]) / len(images)
        results = last[name]
        network = statistics.mean(r.timings["network"] for r in results)
        grouping = statistics.mean(r.timings["grouping"] for r in results)
        people = "+".join(str(len(r.poses)) for r in results)
        table.add_row(name, f"{t:.3f}", f"{network:.3f}", f"{grouping:.3f}", people, f"{t / reference:.2f}")
        print(f"  e2e {name}: {t:.3f} s/image ({t / reference:.2f} of the reference)", flush=True)
    console.print(table)


def _model_names(text: str) -> list[str]:
    names = []
    for item in (v.strip() for v in text.split(",") if v.strip()):
        if item.isdigit():
            item = f"w{item}"  # the earlier form, --models 32,48
        if item not in ("w32", "w48") and item not in PUBLISHED_LAYOUTS:
            raise argparse.ArgumentTypeError(f"{item!r}: expected w32, w48 or one of {', '.join(PUBLISHED_LAYOUTS)}")
        names.append(item)
    return names


def main() -> None:
    from rich.console import Console

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models", default="w32,w48", type=_model_names,
        help=f"w32, w48 (HRNet-AE) or published layouts by name: {', '.join(PUBLISHED_LAYOUTS)}",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-network", action="store_true")
    parser.add_argument("--no-e2e", action="store_true")
    parser.add_argument("--reference-cmd", help="a command timing the reference now; prints REFERENCE_PER_IMAGE_S=<seconds>")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # This process runs the networks as `aepose` runs its own: malloc keeps the freed activation
    # buffers for the next pass (the library leaves that to the process's owner).
    from aepose_cli import keep_freed_memory

    keep_freed_memory()
    console = Console(width=140)
    print(f"torch {torch.__version__}, {args.threads} threads, load average {os.getloadavg()}", flush=True)
    if not args.no_network:
        network_table(args, console)
    if not args.no_e2e:
        e2e_table(args, console)
    print(f"load average at the end {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
