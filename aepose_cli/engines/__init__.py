"""Engines that run the pipeline's stages somewhere other than this process.

`pipeline.py` is the single-process engine (threads around one network). `engines.ray` runs the
same stages on Ray Data; it is imported only by `--engine ray`, so nothing else ever imports
Ray.
"""
