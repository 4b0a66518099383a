"""Item text from a template over the item's fields (SPEC section 2).

Templates use Python format syntax (``"Title: {title}. Year: {year}."``; ``{{``/``}}`` for literal
braces). Rendering is one polars expression over the whole table, so 20k+ items cost nothing.

Empty fields (null, "" or blank) are dropped together with their label, so a movie without a
year reads ``"Title: X. Genres: Y."`` rather than ``"Title: X. Year: . Genres: Y."``: dangling
labels put the same meaningless tokens into many item texts and pull their vectors together.
When every field is present the result is exactly ``template.format(**row)``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from genrec_core.errors import ParamError

PARAM = "embed.template"

# A literal between two fields splits into: closing brackets/quotes that end the previous field
# (the ")" of "{title} ({year})"), then separator punctuation/space, then the next field's label.
_LITERAL_RE = re.compile(r"^([)\]}»\"']*)([\s.,;:|/\-–—]*)(.*)$", re.DOTALL)


@dataclass(frozen=True)
class _Piece:
    field: str
    label: str  # printed before the value when the field is present
    sep: str  # printed before the label when the field and an earlier field are present
    close: str  # printed after the value when the field is present


def template_fields(template: str) -> list[str]:
    """The placeholder names of ``template`` in order; a ParamError if it is malformed."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ParamError(PARAM, f"malformed template {template!r}: {exc} (use {{{{ and }}}} for literal braces)") from None
    names: list[str] = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise ParamError(PARAM, f"template {template!r} has a positional placeholder {{{name}}}; name a field, e.g. {{title}}")
        if spec or conversion:
            raise ParamError(PARAM, f"template {template!r}: format specs and conversions ({{{name}!...:...}}) are not supported; use plain {{{name}}}")
        names.append(name)
    return names


def resolve_template(template: str, dataset_info: Mapping[str, Any] | None) -> str:
    """'auto' -> the dataset's ``default_template`` (from dataset.json); anything else as given."""
    if template != "auto":
        return template
    default = (dataset_info or {}).get("default_template")
    if not isinstance(default, str) or not default.strip():
        raise ParamError(PARAM, "is 'auto' but dataset.json has no default_template; set embed.template, e.g. \"{title}. {genres}\"")
    return default


def _pieces(template: str) -> tuple[list[_Piece], str]:
    """Split the template into (one piece per field, trailing literal)."""
    # literals[i] precedes fields[i]; literals[-1] trails the last field. parse() may split one
    # literal in several entries (at escaped braces), so they are joined here.
    fields: list[str] = []
    literals: list[str] = [""]
    for lit, name, _spec, _conv in string.Formatter().parse(template):
        literals[-1] += lit
        if name is not None:
            fields.append(name)
            literals.append("")
    closes = [""] * len(fields)
    seps = [""] * len(fields)
    labels = [""] * len(fields)
    labels[0] = literals[0]
    for i in range(1, len(fields)):
        close, sep, label = _LITERAL_RE.match(literals[i]).groups()
        closes[i - 1], seps[i], labels[i] = close, sep, label
    trail_close, trail_sep, trail_rest = _LITERAL_RE.match(literals[len(fields)]).groups()
    closes[-1] = trail_close
    pieces = [_Piece(f, labels[i], seps[i], closes[i]) for i, f in enumerate(fields)]
    return pieces, trail_sep + trail_rest


def render_texts(items: pl.DataFrame, template: str, dataset_info: Mapping[str, Any] | None = None) -> list[str]:
    """One text per row of ``items`` (in row order).

    ``template`` may be 'auto' (dataset.json's default). Fields are any columns of ``items``
    except ``item_id``; non-string columns are cast to strings. An unknown placeholder is a
    ParamError naming ``embed.template`` and the available fields.
    """
    template = resolve_template(template, dataset_info)
    names = template_fields(template)
    available = [c for c in items.columns if c != "item_id"]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ParamError(
            PARAM,
            f"unknown field(s) {', '.join('{' + u + '}' for u in unknown)} in template {template!r}; available fields: {', '.join(available)}",
        )
    if not names:  # a constant text would give every item the same vector
        raise ParamError(PARAM, f"template {template!r} uses no field; available fields: {', '.join(available)}")
    pieces, trailing = _pieces(template)

    values = [pl.col(p.field).cast(pl.String).fill_null("") for p in pieces]
    present = [v.str.strip_chars().str.len_chars() > 0 for v in values]
    parts: list[pl.Expr] = []
    for i, (p, value, ok) in enumerate(zip(pieces, values, present, strict=True)):
        earlier = pl.any_horizontal(present[:i]) if i else pl.lit(False)
        parts.append(pl.when(ok & earlier).then(pl.lit(p.sep)).otherwise(pl.lit("")))
        parts.append(pl.when(ok).then(pl.lit(p.label) + value + pl.lit(p.close)).otherwise(pl.lit("")))
    parts.append(pl.when(pl.any_horizontal(present)).then(pl.lit(trailing)).otherwise(pl.lit("")))
    out = items.select(pl.concat_str(parts, separator="").alias("text"))["text"]
    return out.to_list()
