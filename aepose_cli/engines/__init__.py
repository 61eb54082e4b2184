"""Where a run executes, one face for any engine (`jobs.base.Runner`, implemented here without
importing `jobs/`).

`stages` holds the per-item stages every engine runs (prepare, forward a batch, aggregate and
group, deliver), written once; `single` runs them in this process (threads around one network,
`SingleRunner`); `ray` runs them on Ray Data (`RayRunner`), with `ray_session` doing everything
a Ray run does to the process around it. `ray` is imported only by `--engine ray`, so nothing
else ever imports Ray.
"""
