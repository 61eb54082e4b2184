"""`aepose evaluate --report DIR`: an HTML page of plots that explain the AP.

`evaluation.analysis` computes the numbers; this module draws them with matplotlib (an optional
extra, `pip install aepose-cli[report]`, imported only here and only when a report is written,
with the Agg backend set on a private figure API so no global pyplot state is touched) and
writes DIR/index.html, DIR/analysis.json and one PNG per plot.

The folder is written atomically: everything goes into a hidden sibling folder that replaces DIR
in one rename at the end. Every report holds a marker, `.aepose-report.json`, naming this tool and
the files it wrote. A DIR is "an earlier report" only by that marker, and replacing it removes
only the files its marker lists (then the emptied folder); a DIR that holds anything else (the
user's photos, say), or that contains or is one of the command's inputs (the `--images` folder
included), is refused before any work starts (`check_report_dir`). All of it goes through the
run's `FileScope` (`io.filesystem`).
"""
from __future__ import annotations

import html
import io
import json
import os
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import ConfigError, MissingDependencyError
from ..io.filesystem import FileScope, fsync_folder
from ..keypoints import KeypointSet
from . import analysis

REPORT_FILES = ("index.html", "analysis.json")
# The marker a report folder holds: this tool, its version, and the files the report wrote.
REPORT_MARKER = ".aepose-report.json"
_MARKER_FORMAT = 1
# What a marker may list: plain names of the kinds a report writes (never a path, never hidden).
_LISTABLE = re.compile(r"[^/\\.][^/\\]*\.(png|html|json)")
PLOTS: tuple[tuple[str, str, str], ...] = (
    (
        "pr_curves.png",
        "Precision-recall curves",
        "Each panel is one size range; a curve further up and to the right is better, and the "
        "area under it is the AP in the legend (OKS .5, .75 and the mean over .5:.95).",
    ),
    (
        "error_curves_all.png",
        "What if this error were fixed (all sizes)",
        "Starting from the real curve (bottom), each coloured band is the precision gained by "
        "also fixing one more error class, in the paper's order: a wide band is an error worth "
        "fixing; the legend gives the AP after each fix. A fix can also lower the curve (the "
        "optimal scores are chosen at OKS .5): its band is then missing and its AP lower.",
    ),
    (
        "error_curves_medium.png",
        "What if this error were fixed (medium people)",
        "The same cumulative curves for people of 32-96 px (area range 'medium').",
    ),
    (
        "error_curves_large.png",
        "What if this error were fixed (large people)",
        "The same cumulative curves for people larger than 96 px (area range 'large').",
    ),
    (
        "ap_gain.png",
        "AP gain per error class",
        "Bar height is the AP (mean over OKS .5:.95) gained by fixing that class after the "
        "ones to its left; the tallest bar is where the AP is lost.",
    ),
    (
        "localization_errors.png",
        "Localization errors by keypoint",
        "Of the labelled keypoints of matched people, the share that is good, jitter, "
        "inversion, swap or miss, overall (left) and per keypoint type (right): long red and "
        "yellow bars mark the joints the model struggles with.",
    ),
    (
        "skeleton_errors.png",
        "Error rate on the skeleton",
        "Each joint of a template person is coloured by the share of its labelled keypoints "
        "that are not good (white: none, dark red: all); the number is that percentage.",
    ),
    (
        "sensitivity.png",
        "Sensitivity to size, visible keypoints and crowding",
        "AP for people grouped by size, by number of labelled keypoints and by number of other "
        "people overlapping their box (IoU > .1); n is the number of ground-truth people per "
        "group, so low bars on large n are the weaknesses that matter.",
    ),
)
CURVE_LABELS = {
    "baseline": "Original",
    "miss": "w/o Miss",
    "swap": "w/o Swap",
    "inversion": "w/o Inversion",
    "jitter": "w/o Jitter",
    "score": "Optimal score",
    "background_fp": "w/o Background FP",
    "false_negative": "w/o False neg.",
}
CURVE_COLOURS = {
    "baseline": "#ffffff",
    "miss": "#F2E394",
    "swap": "#F2AE72",
    "inversion": "#D96459",
    "jitter": "#8C4646",
    "score": "#4F82BD",
    "background_fp": "#8063A3",
    "false_negative": "#2E8B57",
}
LABEL_COLOURS = {
    "good": "#1ED88B",
    "jitter": "#8C4646",
    "inversion": "#D96459",
    "swap": "#F2AE72",
    "miss": "#F2E394",
}
# A standing person facing the viewer (their left on the image's right), y up.
TEMPLATE = {
    "head_top": (0.0, 7.0), "nose": (0.0, 6.0), "left_eye": (0.25, 6.3), "right_eye": (-0.25, 6.3),
    "left_ear": (0.5, 6.1), "right_ear": (-0.5, 6.1), "upper_neck": (0.0, 5.4), "neck": (0.0, 5.2),
    "thorax": (0.0, 4.8), "left_shoulder": (1.1, 4.8), "right_shoulder": (-1.1, 4.8),
    "left_elbow": (1.5, 3.5), "right_elbow": (-1.5, 3.5), "left_wrist": (1.8, 2.2),
    "right_wrist": (-1.8, 2.2), "pelvis": (0.0, 2.5), "left_hip": (0.6, 2.5), "right_hip": (-0.6, 2.5),
    "left_knee": (0.7, 1.25), "right_knee": (-0.7, 1.25), "left_ankle": (0.75, 0.0),
    "right_ankle": (-0.75, 0.0),
}


def report_file_names() -> tuple[str, ...]:
    """Every file a report of this version may write (what the output plan declares)."""
    return (*REPORT_FILES, *(plot[0] for plot in PLOTS), REPORT_MARKER)


def earlier_report_files(folder: str | os.PathLike[str]) -> list[str] | None:
    """The files an earlier report of this tool listed in its marker, or None when `folder` holds
    no such marker (then it is not an earlier report, whatever else it holds)."""
    marker = Path(folder) / REPORT_MARKER
    try:
        if not stat.S_ISREG(os.lstat(marker).st_mode) or os.lstat(marker).st_size > 1 << 20:
            return None
        data = json.loads(marker.read_bytes())
    except (OSError, ValueError):
        return None
    files = data.get("files") if isinstance(data, dict) and data.get("aepose_report") == _MARKER_FORMAT else None
    if not isinstance(files, list) or not all(isinstance(name, str) and _LISTABLE.fullmatch(name) for name in files):
        return None
    return files


def check_report_dir(report_dir: str | os.PathLike[str], inputs: Sequence[Any]) -> Path:
    """Refuse a report folder that would replace or swallow an input (a file, or a folder such as
    `--images`), or that is not empty and not an earlier report (its marker): one line, exit 2.

    Also checks that matplotlib can be imported, so a missing extra fails before inference.
    Returns the folder as a Path.
    """
    _import_matplotlib()
    target = Path(report_dir)
    resolved = target.resolve()
    for item in inputs:
        if item is None:
            continue
        path = Path(item).resolve()
        if path == resolved or resolved in path.parents:
            raise ConfigError(f"{target}: the report folder would replace the input {item}")
    if target.exists() or target.is_symlink():
        if not target.is_dir():
            raise ConfigError(f"{target}: exists and is not a folder")
        entries = sorted(p.name for p in target.iterdir())
        if entries:
            listed = earlier_report_files(target)
            if listed is None:
                raise ConfigError(
                    f"{target}: not empty and not a previous report of aepose (holds {entries[0]}, no {REPORT_MARKER}); "
                    "give a new or empty folder"
                )
            foreign = [name for name in entries if name != REPORT_MARKER and name not in listed]
            if foreign:
                raise ConfigError(
                    f"{target}: holds {foreign[0]}, which the previous report there did not write; give a new or empty folder"
                )
    return target


def report_outputs(report_dir: str | os.PathLike[str]) -> tuple[str, ...]:
    """The names inside the report folder a run may create, replace or delete: this version's
    files and those the earlier report there listed."""
    earlier = earlier_report_files(report_dir) if Path(report_dir).is_dir() else None
    return tuple(dict.fromkeys([*report_file_names(), *(earlier or [])]))


def write_report(
    report_dir: str | os.PathLike[str],
    evaluation: Any,
    annotations: Mapping[str, Any] | str | Path,
    results: Any,
    keypoints: KeypointSet,
    title: str = "COCO keypoint evaluation",
    *,
    scope: FileScope | None = None,
) -> Path:
    """Analyse, plot and write the report folder atomically; returns the folder. `scope`: the
    run's `FileScope`, which declared the folder (None: a scope of that folder alone).

    `evaluation` is `cocoeval.evaluate_keypoints_detailed`'s answer for the same annotations
    and results: its arrays give the precision-recall curves, so nothing is evaluated twice.
    """
    target = Path(report_dir)
    data: dict[str, Any] = {
        "title": title,
        "keypoints": {"set": keypoints.name, "names": list(keypoints.names), "use_area": keypoints.use_area, "evaluation": keypoints.evaluation},
        "metrics": dict(evaluation.metrics),
    }
    if evaluation.precision is None:
        data["note"] = "no detections: nothing to analyse"
        files: dict[str, bytes] = {}
    else:
        data["pr_curves"] = _pr_curves(evaluation)
        data.update(
            analysis.analyze_keypoints(
                annotations, results, keypoints.sigmas, keypoints.flip_index, keypoints.use_area,
                crowd_mode=keypoints.evaluation == "keypoints_crowd",
            )
        )
        files = _plots(data, keypoints)
    files["analysis.json"] = (json.dumps(data, indent=1) + "\n").encode()
    files["index.html"] = _html(data, [p for p in PLOTS if p[0] in files]).encode()
    _commit_folder(target, files, scope)
    return target


# --------------------------------------------------------------------------------------------
# Numbers taken from the evaluator


def _pr_curves(evaluation: Any) -> dict[str, Any]:
    """Precision at the recall thresholds per area range: OKS .5, .75 and mean over all T."""
    from .cocoeval import AREA_RANGES, OKS_THRESHOLDS

    precision = evaluation.precision[:, :, 0, :]  # [T, R, A] of the single category
    t50 = int(np.flatnonzero(OKS_THRESHOLDS == 0.5)[0])
    t75 = int(np.flatnonzero(OKS_THRESHOLDS == 0.75)[0])
    curves = {}
    for a, (label, *_rest) in enumerate(AREA_RANGES):
        p = precision[:, :, a]
        if (p <= -1).all():
            continue
        curves[label] = {
            "0.5": p[t50].tolist(),
            "0.75": p[t75].tolist(),
            "mean": np.where(p > -1, p, np.nan).mean(axis=0).tolist(),
        }
    return curves


# --------------------------------------------------------------------------------------------
# Plots


def _import_matplotlib():
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError(
            "--report needs matplotlib: pip install 'aepose-cli[report]'"
        ) from None
    return matplotlib, Figure, FigureCanvasAgg


def _png(fig) -> bytes:
    _, _, canvas_type = _import_matplotlib()
    canvas_type(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _plots(data: dict[str, Any], keypoints: KeypointSet) -> dict[str, bytes]:
    _, figure, _ = _import_matplotlib()
    recall = np.array(data["recall_thresholds"])
    files = {"pr_curves.png": _png(_plot_pr(figure, data, recall))}
    for area in ("all", "medium", "large"):
        if area in data["error_curves"]:
            files[f"error_curves_{area}.png"] = _png(_plot_error_curves(figure, data, area, recall))
    files["ap_gain.png"] = _png(_plot_gain(figure, data))
    files["localization_errors.png"] = _png(_plot_localization(figure, data, keypoints))
    files["skeleton_errors.png"] = _png(_plot_skeleton(figure, data, keypoints))
    files["sensitivity.png"] = _png(_plot_sensitivity(figure, data))
    return files


def _plot_pr(figure, data, recall):
    curves = data["pr_curves"]
    fig = figure(figsize=(5 * max(len(curves), 1), 4.6))
    for i, (area, per) in enumerate(curves.items()):
        ax = fig.add_subplot(1, max(len(curves), 1), i + 1)
        for key, colour, name in (("0.5", "#2E8B57", "OKS .5"), ("0.75", "#4F82BD", "OKS .75"), ("mean", "#222222", "OKS .5:.95")):
            p = np.array(per[key], dtype=float)
            ap = np.nanmean(np.where(p > -1, p, np.nan)) if np.any(p > -1) else float("nan")
            ax.plot(recall, p, color=colour, lw=2, label=f"{name}: AP {ap:.3f}")
        _pr_axes(ax, f"area: {area}")
        ax.legend(loc="lower left", fontsize=9)
    return fig


def _pr_axes(ax, title: str) -> None:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.grid(True, alpha=0.4)


def _plot_error_curves(figure, data, area, recall):
    thresholds = [round(t, 2) for t in data["oks_thresholds"]]
    shown = [t for t in (0.5, 0.75, 0.95) if t in thresholds]
    fig = figure(figsize=(5.2 * len(shown), 5.0))
    per_curve = data["error_curves"][area]
    for i, oks in enumerate(shown):
        t = thresholds.index(oks)
        ax = fig.add_subplot(1, len(shown), i + 1)
        previous = None
        handles = []
        for name in data["curves_order"]:
            p = np.array(per_curve[name]["precision"][t], dtype=float)
            p = np.where(p > -1, p, 0.0)
            ax.plot(recall, p, color="k", lw=1)
            if previous is not None:
                ax.fill_between(recall, previous, p, where=p >= previous, color=CURVE_COLOURS[name], interpolate=True)
            previous = p
            ap = per_curve[name]["ap"][t]
            handles.append((CURVE_COLOURS[name], f"{CURVE_LABELS[name]}: {ap:.3f}" if ap > -1 else f"{CURVE_LABELS[name]}: n/a"))
        _pr_axes(ax, f"OKS {oks:g}, area: {area}")
        from matplotlib.patches import Patch

        ax.legend(
            handles=[Patch(facecolor=c, edgecolor="k", label=text) for c, text in reversed(handles)],
            loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8,
        )
    return fig


def _plot_gain(figure, data):
    names = data["curves_order"][1:]
    areas = list(data["ap_gain"])
    fig = figure(figsize=(10, 4.6))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        values = []
        for area in areas:
            gains = [g for g in data["ap_gain"][area][name] if g != -1]
            values.append(float(np.mean(gains)) if gains else 0.0)
        xs = np.arange(len(areas)) + (j - (len(names) - 1) / 2) * width
        ax.bar(xs, values, width, color=CURVE_COLOURS[name], edgecolor="k", label=CURVE_LABELS[name])
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(areas)))
    ax.set_xticklabels([f"area: {a}" for a in areas])
    ax.set_ylabel("AP gain (mean over OKS .5:.95)")
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    ax.grid(True, axis="y", alpha=0.4)
    return fig


def _plot_localization(figure, data, keypoints: KeypointSet):
    loc = data["localization"]["all" if "all" in data["localization"] else next(iter(data["localization"]))]
    fig = figure(figsize=(13, 0.35 * keypoints.num_joints + 2.5))
    ax = fig.add_axes((0.03, 0.1, 0.25, 0.8))
    totals = [loc["totals"][name] for name in analysis.LABELS]
    if sum(totals):
        ax.pie(totals, colors=[LABEL_COLOURS[n] for n in analysis.LABELS], wedgeprops={"edgecolor": "k"})
    ax.set_title(f"all keypoints ({sum(totals)})")
    ax.legend(
        [f"{n}: {100 * v / max(sum(totals), 1):.1f}%" for n, v in zip(analysis.LABELS, totals)],
        loc="upper left", bbox_to_anchor=(0.0, 0.0), fontsize=9, ncol=2,
    )
    bx = fig.add_axes((0.42, 0.1, 0.55, 0.8))
    counts = np.array([loc["keypoints"][name] for name in analysis.LABELS], dtype=float)  # [5, K]
    share = counts / np.maximum(counts.sum(axis=0), 1)
    left = np.zeros(keypoints.num_joints)
    ys = np.arange(keypoints.num_joints)
    for name, row in zip(analysis.LABELS, share):
        bx.barh(ys, row, left=left, color=LABEL_COLOURS[name], edgecolor="k", lw=0.5, label=name)
        left += row
    bx.set_yticks(ys)
    bx.set_yticklabels([f"{n} ({int(c)})" for n, c in zip(keypoints.names, counts.sum(axis=0))], fontsize=8)
    bx.invert_yaxis()
    bx.set_xlim(0, 1)
    bx.set_xlabel("share of labelled keypoints of matched people")
    bx.legend(ncol=5, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    return fig


def _plot_skeleton(figure, data, keypoints: KeypointSet):
    from matplotlib import colormaps

    loc = data["localization"]["all" if "all" in data["localization"] else next(iter(data["localization"]))]
    counts = np.array([loc["keypoints"][name] for name in analysis.LABELS], dtype=float)
    total = counts.sum(axis=0)
    rate = np.where(total > 0, 1 - counts[0] / np.maximum(total, 1), np.nan)
    xy = np.array([TEMPLATE.get(n, (0.0, 0.0)) for n in keypoints.names])
    fig = figure(figsize=(5.5, 7))
    ax = fig.add_axes((0.05, 0.05, 0.75, 0.9))
    for a, b in keypoints.skeleton:
        ax.plot(xy[[a, b], 0], xy[[a, b], 1], color="#888888", lw=3, zorder=1)
    cmap = colormaps["Reds"]
    colours = [cmap(r) if np.isfinite(r) else (0.85, 0.85, 0.85, 1) for r in rate]
    ax.scatter(xy[:, 0], xy[:, 1], s=420, c=colours, edgecolors="k", zorder=2)
    for (x, y), r in zip(xy, rate):
        text = "n/a" if not np.isfinite(r) else f"{100 * r:.0f}"
        ax.text(x, y, text, ha="center", va="center", fontsize=7, zorder=3,
                color="white" if np.isfinite(r) and r > 0.6 else "black")
    ax.set_aspect("equal")
    ax.set_xlim(-2.6, 2.6)
    ax.set_ylim(-0.6, 7.6)
    ax.axis("off")
    ax.set_title("% of labelled keypoints not good\n(viewer's left = person's right)", fontsize=10)
    cax = fig.add_axes((0.83, 0.2, 0.04, 0.6))
    gradient = np.linspace(1, 0, 256)[:, None]
    cax.imshow(gradient, aspect="auto", cmap=cmap, extent=(0, 1, 0, 100))
    cax.set_xticks([])
    cax.yaxis.tick_right()
    return fig


def _plot_sensitivity(figure, data):
    groups = (("size", "person size (sqrt area)"), ("visible_keypoints", "labelled keypoints"), ("overlaps", "overlapping people (IoU > .1)"))
    fig = figure(figsize=(15, 4.6))
    for i, (key, xlabel) in enumerate(groups):
        ax = fig.add_subplot(1, 3, i + 1)
        buckets = data["sensitivity"][key]
        xs = np.arange(len(buckets))
        for j, (field, colour, label) in enumerate((("ap50", "#2E8B57", "OKS .5"), ("ap75", "#4F82BD", "OKS .75"), ("ap", "#222222", "OKS .5:.95"))):
            values = [max(b[field], 0.0) for b in buckets]
            ax.bar(xs + (j - 1) * 0.27, values, 0.27, color=colour, label=label)
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{b['label']}\nn={b['num_gt']}" for b in buckets], fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("AP")
        ax.grid(True, axis="y", alpha=0.4)
        if i == 0:
            ax.legend(fontsize=8, loc="upper left")
    return fig


# --------------------------------------------------------------------------------------------
# HTML


def _html(data: dict[str, Any], plots: Sequence[tuple[str, str, str]]) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><th>{e(name)}</th><td>{'n/a' if value == -1 else format(value, '.3f')}</td></tr>"
        for name, value in data["metrics"].items()
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(data['title'])}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}th,td{border:1px solid #bbb;padding:3px 8px;text-align:right}"
        "th{text-align:left}img{max-width:100%;border:1px solid #ddd}figure{margin:2em 0}"
        "figcaption{margin-top:.4em}</style></head><body>",
        f"<h1>{e(data['title'])}</h1>",
        '<section id="metrics"><h2>Metrics</h2>',
        f'<table class="metrics">{rows}</table></section>',
    ]
    if "note" in data:
        parts.append(f'<p class="note">{e(data["note"])}</p>')
    for file_name, heading, sentence in plots:
        ident = file_name.rsplit(".", 1)[0]
        parts.append(
            f'<figure id="{ident}"><h2>{e(heading)}</h2>'
            f'<img src="{e(file_name)}" alt="{e(heading)}">'
            f"<figcaption>{e(sentence)}</figcaption></figure>"
        )
    if "localization" in data:
        parts.append(_tables(data))
    parts.append(
        '<p>All numbers behind the plots are in <a href="analysis.json">analysis.json</a>. '
        "Error taxonomy: Ronchi &amp; Perona, <i>Benchmarking and Error Diagnosis in "
        "Multi-Instance Pose Estimation</i>, ICCV 2017.</p></body></html>"
    )
    return "\n".join(parts) + "\n"


def _tables(data: dict[str, Any]) -> str:
    e = html.escape
    thresholds = [round(t, 2) for t in data["oks_thresholds"]]
    picks = [thresholds.index(t) for t in (0.5, 0.75) if t in thresholds]
    head = "".join(f"<th>AP @{thresholds[t]:g}</th>" for t in picks) + "<th>AP .5:.95</th>"
    out = ['<section id="error-table"><h2>AP after each fix (cumulative)</h2>']
    for area, per_curve in data["error_curves"].items():
        body = ""
        for name in data["curves_order"]:
            ap = per_curve[name]["ap"]
            valid = [v for v in ap if v > -1]
            cells = "".join(f"<td>{ap[t]:.3f}</td>" for t in picks)
            cells += f"<td>{np.mean(valid):.3f}</td>" if valid else "<td>n/a</td>"
            body += f"<tr><th>{e(CURVE_LABELS[name])}</th>{cells}</tr>"
        out.append(f"<h3>area: {e(area)}</h3><table><tr><th></th>{head}</tr>{body}</table>")
    out.append("</section>")
    bg = data["background"]
    out.append('<section id="background"><h2>Background errors</h2><table><tr><th>area</th>')
    out.append("".join(f"<th>FP @{thresholds[t]:g}</th><th>FN @{thresholds[t]:g}</th>" for t in picks) + "</tr>")
    for area, counts in bg.items():
        cells = "".join(f"<td>{counts['false_positives'][t]}</td><td>{counts['false_negatives'][t]}</td>" for t in picks)
        out.append(f"<tr><th>{e(area)}</th>{cells}</tr>")
    out.append("</table><p>FP: detections matching no person at that OKS (after the "
               "keypoint and score fixes); FN: people no detection matches.</p></section>")
    return "".join(out)


# --------------------------------------------------------------------------------------------
# Atomic folder


def _commit_folder(target: Path, files: Mapping[str, bytes], scope: FileScope | None = None) -> None:
    """Write `files` and the marker into a hidden sibling folder, then swap it in for `target`;
    an earlier report there is set aside and emptied of the files its marker lists, and removed
    once empty (anything it did not list stays where it was set aside, never deleted)."""
    if scope is None:
        scope = FileScope("report")
        scope.declare_folder(target)
        scope.seal()
    listed = earlier_report_files(target) if target.is_dir() else None
    if target.is_dir() and listed is None and any(target.iterdir()):
        raise ConfigError(f"{target}: not empty and not a previous report of aepose; give a new or empty folder")
    temp = scope.temporary_folder(target)
    for name, payload in files.items():
        scope.write_into(temp, name, payload)
    marker = {"aepose_report": _MARKER_FORMAT, "made_by": f"aepose {__version__}", "files": sorted(files)}
    scope.write_into(temp, REPORT_MARKER, (json.dumps(marker, indent=1) + "\n").encode())
    old = scope.swap_folder(temp, target)
    if old is not None:
        scope.remove_listed(old, [*(listed or []), REPORT_MARKER])
    fsync_folder(target.parent)
