"""One module per command body; `cli.py` only declares the options and calls into these."""
