"""`aepose image` and `aepose folder`: plan, runner, the images job, and its report."""
from __future__ import annotations

from pathlib import Path

from ..config import DrawConfig, EngineConfig, ImageIds, InferenceConfig, ModelChoice
from ..io.output_plan import entered
from ..jobs.images import ImagesOutcome, image_ids_record, plan_folder, plan_images, run_images
from .console import Bars, DownloadBar, err_console, report_failures
from .runtime import build_runner, require_engine


def run_image(
    images: list[Path], out: str | bool | None, json_out: str | bool | None, json_style: str,
    model: ModelChoice, config: InferenceConfig, draw_cfg: DrawConfig, *, image_ids: ImageIds | None = None,
    csv_out: str | None = None,
) -> int:
    """One or more image files; `out`/`json_out` False turns that output off; `csv_out`: the
    `--csv` table (None: none). Returns the exit status (1: some images failed)."""
    plan = plan_images(images, out, json_out, image_ids, csv_out)
    with entered(plan.scope):  # the outputs locked before the model loads
        runner = build_runner(model, config)
        outcome = run_images(plan, runner, draw_cfg, json_style, progress=Bars("img"), on_note=err_console.print)
    return _report(outcome, runner.description)


def run_folder(
    folder: Path, *, recursive: bool, extensions: tuple[str, ...], shard: str | None, skip_existing: bool,
    out: str | bool | None, json_out: str | bool | None, json_style: str,
    model: ModelChoice, config: InferenceConfig, draw_cfg: DrawConfig, engine: EngineConfig | None = None,
    image_ids: ImageIds | None = None, csv_out: str | None = None,
) -> int:
    """Every image of a folder (streamed, resumable, shardable), in this process or on Ray."""
    from ..io.coco_json import is_complete
    from ..jobs.images import finished_csv_state, finished_json
    from ..jobs.provenance import provenance

    require_engine(engine)
    plan = plan_folder(
        folder, recursive=recursive, extensions=extensions, shard=shard, out=out, json_out=json_out, image_ids=image_ids, csv_out=csv_out,
    )
    with entered(plan.scope):  # the outputs locked before anything is decided or loaded
        journaled = plan.json_path is not None or plan.csv_path is not None
        produced_by = provenance(folder, plan.keys, model, config, progress=DownloadBar()) if journaled else None
        if produced_by is not None:
            # The threshold decides the JSON's visibility flags; the widths ("auto" or as given)
            # keep a resumed run from mixing two looks. The same with or without drawn images.
            produced_by["drawing"] = draw_cfg.recorded()
            if image_ids is not None and image_ids.kind != "sequential":  # the default is recorded by its absence
                produced_by["image_ids"] = image_ids_record(image_ids)
        seed = None
        if skip_existing:
            json_finished = plan.json_path is not None and is_complete(plan.json_path)
            data, covers_all = finished_json(plan, produced_by) if json_finished else (None, False)
            csv_state = finished_csv_state(plan, json_finished)
            if json_finished and covers_all and csv_state != "to do":
                err_console.print(f"{plan.json_path}: already complete for these {len(plan.entries)} images; nothing to do")
                return 0
            seed = data
        runner = build_runner(model, config, engine)
        outcome = run_images(
            plan, runner, draw_cfg, json_style, resume=skip_existing, provenance=produced_by, seed=seed,
            progress=Bars("img"), on_note=err_console.print,
        )
    return _report(outcome, runner.description)


def _report(outcome: ImagesOutcome, where: str) -> int:
    times = outcome.times
    for path in (outcome.json_path, outcome.csv_path):
        if path is not None:
            err_console.print(f"wrote {path}")
    ok = times.items - len(times.failures)
    err_console.print(f"{ok} image(s) done, {len(times.failures)} failed, {times.wall:.1f} s on {where}")
    report_failures(times.failures)
    return 1 if times.failures else 0
