"""COCO keypoint evaluation: files read and checked (`cocofiles`), the evaluator exact to
xtcocotools (`cocoeval`), the error analysis of coco-analyze (`analysis`) and its HTML report
(`report`, matplotlib). Imported only by `aepose evaluate` and library users who want it:
`import aepose_cli` does not import it."""
