"""The JSON files of the MTGRec, LC-Rec, LETTER and ETEGRec code releases.

A dataset ``<name>`` is a folder holding

* ``<name>.inter.json``: ``{user index: [item index, ...]}``, each user's items in time order (the
  last one is the test item);
* ``<name>.item.json`` (optional): ``{item index: {"title": ..., "description": ..., ...}}``, whatever
  text fields the release kept (a field may be a string, a number or a list of them);
* ``<name>.index.json`` (optional): ``{item index: ["<a_12>", "<b_70>", ...]}``, the semantic ID the
  paper's tokenizer gave each item, one token ``<letter_code>`` per level.

Kept apart from the ``inter_json`` source (``sources/inter_json.py``) because the emit-ids stage
reads ``.index.json`` too (``ids.source: index_json``) and should depend on these readers only.
Every problem is one ``InputFormatError`` naming the file and the offending entry's key.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl

from genrec_core.data.readers import find_file_stem, read_json_document
from genrec_core.errors import InputFormatError

INTER_SUFFIX = ".inter.json"
ITEM_SUFFIX = ".item.json"
INDEX_SUFFIX = ".index.json"
#: One semantic-ID token of an ``.index.json``: ``<a_12>`` = level prefix ``a``, code 12.
TOKEN_RE = re.compile(r"^<([A-Za-z]+)_(\d+)>$")
#: Text fields put first in the template, in this order; other fields follow in file order.
PREFERRED_FIELDS = ("title", "brand", "categories", "description")
#: Columns the item table reserves (the source's id; the protocol's ids).
RESERVED_FIELDS = ("item", "item_id", "source_item_id")
_INT32_MAX = int(np.iinfo(np.int32).max)


def find_inter_json_stem(raw_dir: Path, category: str | None) -> str:
    """``data.category`` when given, else the ``<name>`` of the only ``*.inter.json`` in raw_dir."""
    return find_file_stem(raw_dir, category, INTER_SUFFIX)


def _object(path: Path, what: str) -> dict:
    data = read_json_document(path, unique_keys=True)
    if not isinstance(data, dict):
        raise InputFormatError(path, f"expected a JSON object {what}, got a {type(data).__name__}")
    return data


def _index_key(path: Path, key: str, what: str) -> str:
    """An item index key as the ids are written elsewhere: ``str(int)`` ("007" -> "7")."""
    text = key.strip()
    if not text.isdigit():
        raise InputFormatError(path, f"entry {key!r}: {what} keys must be non-negative integer item indices")
    return str(int(text))


def _is_index(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_inter_json(path: Path) -> pl.DataFrame:
    """Interactions of an ``.inter.json``: ``user`` (the key), ``item`` (str of the index),
    ``timestamp`` (null: only the order is known) and ``order`` (running position: file order of
    the users, each user's items in list order)."""
    data = _object(path, "{user index: [item index, ...]}")
    users: list[str] = []
    items: list[int] = []
    lengths: list[int] = []
    for key, seq in data.items():  # ~200k items for Amazon Beauty: a Python loop is fine
        if not key.strip():
            raise InputFormatError(path, f"entry {key!r}: a user key must not be blank")
        if not isinstance(seq, list) or not seq:
            got = "an empty list" if isinstance(seq, list) else f"{type(seq).__name__} {str(seq)[:80]}"
            raise InputFormatError(path, f"user {key!r}: expected a non-empty list of item indices, got {got}")
        bad = [v for v in seq if not _is_index(v)]
        if bad:
            raise InputFormatError(path, f"user {key!r}: item {bad[0]!r} is not a non-negative integer item index")
        users.append(key)
        lengths.append(len(seq))
        items.extend(seq)
    user_col = pl.Series("user", users, dtype=pl.String).gather(np.repeat(np.arange(len(users)), lengths)) if users else pl.Series("user", [], dtype=pl.String)
    return pl.DataFrame(
        {
            "user": user_col,
            "item": pl.Series("item", items, dtype=pl.Int64).cast(pl.String),
            "timestamp": pl.Series("timestamp", [None] * len(items), dtype=pl.Int64),
            "order": pl.Series("order", np.arange(len(items), dtype=np.int64)),
        }
    )


def _field_name(path: Path, key: str, name: str) -> str:
    """A text field's column name: non-word characters become ``_`` (the template's placeholders)."""
    clean = re.sub(r"\W+", "_", name).strip("_")
    if not clean or clean in RESERVED_FIELDS:
        raise InputFormatError(path, f"entry {key!r}: field {name!r} cannot be a text field (empty or reserved: {', '.join(RESERVED_FIELDS)})")
    return clean


def _text(path: Path, key: str, name: str, value) -> str:
    """A field's value as text: lists (nested too) become comma-joined strings, null is empty."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list):
        parts = (_text(path, key, name, v) for v in value)
        return ", ".join(p for p in parts if p)
    raise InputFormatError(path, f"entry {key!r}: field {name!r} must be a string, number or list, got {type(value).__name__}")


def read_item_json(path: Path) -> pl.DataFrame:
    """Item text of an ``.item.json``: ``item`` (str of the index) plus one String column per
    field any item has (missing: empty), preferred fields first (``text_fields_order``)."""
    data = _object(path, "{item index: {field: text, ...}}")
    rows: dict[str, dict[str, str]] = {}
    for key, value in data.items():
        item = _index_key(path, key, "item")
        if not isinstance(value, dict):
            raise InputFormatError(path, f"entry {key!r}: expected an object of text fields, got {type(value).__name__}")
        if item in rows:
            raise InputFormatError(path, f"entry {key!r}: item {item} appears twice")
        fields: dict[str, str] = {}
        for name, text in value.items():
            column = _field_name(path, key, name)
            if column in fields:
                raise InputFormatError(path, f"entry {key!r}: two fields are named {column!r} once cleaned for the template")
            fields[column] = _text(path, key, name, text)
        rows[item] = fields
    names = text_fields_order([n for fields in rows.values() for n in fields])
    columns = {"item": list(rows)} | {n: [fields.get(n, "") for fields in rows.values()] for n in names}
    return pl.DataFrame(columns, schema={c: pl.String for c in columns})


def text_fields_order(names: list[str]) -> list[str]:
    """Distinct names: ``PREFERRED_FIELDS`` present first, the others in first-seen order."""
    seen = list(dict.fromkeys(names))
    return [n for n in PREFERRED_FIELDS if n in seen] + [n for n in seen if n not in PREFERRED_FIELDS]


def read_index_json(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """A release's semantic IDs: (item keys as ``str(int)``, codes int64 [N, L], level prefixes).

    Token ``l`` of every ID must read ``<p_c>`` with the same prefix ``p`` for all items (LETTER:
    a, b, c, d) and a code ``c`` that fits Int32; every ID must have the same length L >= 1.
    """
    data = _object(path, '{item index: ["<a_12>", "<b_70>", ...]}')
    if not data:
        raise InputFormatError(path, "no entries: no item has a semantic ID")
    keys: list[str] = []
    codes: list[list[int]] = []
    prefixes: list[str] | None = None
    seen: set[str] = set()
    for key, tokens in data.items():
        item = _index_key(path, key, "item")
        if item in seen:
            raise InputFormatError(path, f"entry {key!r}: item {item} appears twice")
        seen.add(item)
        if not isinstance(tokens, list) or not tokens:
            raise InputFormatError(path, f'entry {key!r}: expected a non-empty list of tokens such as "<a_12>", got {str(tokens)[:80]}')
        parsed = []
        for token in tokens:
            match = TOKEN_RE.match(token) if isinstance(token, str) else None
            if match is None:
                raise InputFormatError(path, f"entry {key!r}: token {token!r} is not of the form <letter_code>, e.g. <a_12>")
            parsed.append((match.group(1), int(match.group(2))))
        if prefixes is None:
            prefixes = [p for p, _ in parsed]
        if len(parsed) != len(prefixes):
            raise InputFormatError(path, f"entry {key!r}: ID has {len(parsed)} tokens, the first entry's has {len(prefixes)} (all IDs must have one length)")
        for level, ((prefix, code), expected) in enumerate(zip(parsed, prefixes), start=1):
            if prefix != expected:
                raise InputFormatError(path, f"entry {key!r}: token {level} has prefix {prefix!r}, the first entry's has {expected!r} (one prefix per level)")
            if code > _INT32_MAX:
                raise InputFormatError(path, f"entry {key!r}: code {code} of token {level} is out of range (0..{_INT32_MAX})")
        keys.append(item)
        codes.append([c for _, c in parsed])
    return keys, np.asarray(codes, dtype=np.int64), list(prefixes or [])
