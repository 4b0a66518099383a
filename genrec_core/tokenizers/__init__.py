"""Semantic-ID tokenizers (SPEC section 3): item vectors -> L discrete codes per item."""
