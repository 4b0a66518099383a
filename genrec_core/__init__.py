"""genrec_core: the shared library behind every stage of the generative recommendation pipeline.

"SPEC N" in docstrings and comments cites section N of docs/spec.md, the method specification
(formulas and the papers' reference numbers) in this repository."""

__version__ = "0.1.0"
