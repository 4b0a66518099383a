"""Item text -> item vectors (SPEC section 2): text templates, encoders, PCA."""

from genrec_core.embed.encoders import ENCODERS, Encoder, build_encoder, resolve_model
from genrec_core.embed.pca import PCAResult, fit_pca
from genrec_core.embed.text import render_texts, resolve_template, template_fields

__all__ = [
    "ENCODERS",
    "Encoder",
    "PCAResult",
    "build_encoder",
    "fit_pca",
    "render_texts",
    "resolve_model",
    "resolve_template",
    "template_fields",
]
