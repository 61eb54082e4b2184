"""One module per command body, as OpenPifPaf's `predict.py` / `video.py`.

`cli.py` parses options into frozen configs and calls `run(...)` of the module here; these
modules build a `PoseEstimator`, a source of work items and a sink, hand them to
`pipeline.run_pipeline`, and print through `console.py`. They raise `AeposeError`s; turning
those into one line and an exit code is `cli.main`'s job alone.
"""
