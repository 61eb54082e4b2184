"""Library runs: a job plans its outputs, decides what resume means for them, runs its items or
tasks on the `Runner` it is handed (`jobs.base`) and returns an outcome. It never prints nor
exits: notes reach the caller through callbacks, progress through a `types.Progress`, failures
as `AeposeError`s. The command line (`aepose_cli.cli`) builds the runner and reports the outcome;
a library user can do the same with `engines.single.SingleRunner` around a `PoseEstimator`.

Jobs and engines never import each other: they meet through the `Runner` protocol.
"""
