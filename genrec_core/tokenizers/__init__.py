"""Semantic-ID tokenizers (SPEC section 3): item vectors -> L discrete codes per item.

The kinds (``tokenizer.kind``) are specs in one registry: ``spec.py``, built-in kinds in ``kinds/``."""
