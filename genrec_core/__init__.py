"""genrec_core: the shared library behind every stage of the generative recommendation pipeline."""

__version__ = "0.1.0"
