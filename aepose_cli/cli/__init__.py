"""The application: the `aepose` command line, the only package that prints, exits or changes
the process.

`main.py` declares the commands (click) and turns library errors into one line and an exit code
(the only `sys.exit`); `runtime.py` owns the process (torch's threads, the malloc tuning the
network's buffers want, warning filters) and builds the runner a command hands its job;
`console.py` draws every bar and table. One module per command (`images`, `video`, `evaluate`,
`export`, `models`): plan -> runner -> job -> report, over the library's `jobs/`.
"""
