"""New items (cold start): check them, embed their text with the model's encoder, give them IDs
with the trained tokenizer against the existing ID table.

What a generative model needs to rank an item it never saw in training is an ID: its tokens are
in the vocabulary, so once the item's ID is in the trie, beam search can produce it. The ID is
made the way emit-ids made every other one:

1. the item's text is rendered from the embed stage's template over the item's fields (or given
   as one ``text`` string), encoded with the same encoder (``embed.mode``/``embed.model``,
   ``max_length``, ``dtype``) and L2-normalised when ``embed.normalize``;
2. the trained tokenizer (the kept file of ``recommender.tokenizer``) quantises it to L codes;
3. collisions are resolved with the trained ``ids.collision`` mode against the existing table,
   whose IDs never change (a served model's items keep their IDs):

   - ``reassign_last``: the raw ID is kept when no item has it; otherwise the item moves to the
     nearest last-level code (distance of its last residual to the last codebook, as emit-ids
     moves) that no item under the same L-1 prefix uses;
   - ``dedup_level``: the raw codes plus the next free number of the dedup level.

   New items are placed in the order given (the first of two new items with the same raw ID
   keeps it). A code the model has no token for (the train stage sizes each level by the codes
   the table used) cannot be given: the item is refused with a message saying why.

Limits (errors, not silent approximations): item vectors that were collaborative (a new item has
no interactions) or PCA-reduced (the embed stage does not keep its PCA) cannot be reproduced for
a new item; item-ID models (sasrec, gru4rec) have no row for an unseen item.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genrec_core.serving.errors import RequestError

#: Record keys with a meaning of their own (the other keys are text fields).
ID_KEY = "item_id"
TEXT_KEY = "text"
MAX_NEW_ITEMS = 100_000
#: Longest item id accepted for a new item (ids are keys, quoted in messages and stored in Parquet).
MAX_ID_CHARS = 256


def id_problem(value: str) -> str | None:
    """Why ``value`` cannot be an item id (None when it can): only printable text, so that it
    encodes as UTF-8 (no lone surrogates), prints on one line (no control characters) and stays short."""
    if len(value) > MAX_ID_CHARS:
        return f"is {len(value)} characters long; at most {MAX_ID_CHARS}"
    bad = next((c for c in value if not c.isprintable()), None)
    if bad is not None:
        return f"holds the unprintable character U+{ord(bad):04X} (control characters, lone surrogates and line breaks are refused)"
    return None


def quote_id(value: str, limit: int = 40) -> str:
    """``repr`` of an id cut to ``limit`` characters (error messages never echo unbounded input)."""
    return repr(value[:limit]) + ("..." if len(value) > limit else "")


@dataclass(frozen=True)
class NewItem:
    source_id: str
    fields: dict[str, str]  # text fields as given (empty when only ``text``)
    text: str | None = None  # the whole text, when given as one string


@dataclass
class AddedItems:
    """What ``ServingModel.add_items`` did."""

    source_ids: list[str]
    indices: list[int]  # new internal item indices
    codes: np.ndarray  # [m, L'] the new IDs (codes, not tokens)
    raw_codes: np.ndarray  # [m, L] the tokenizer's codes before collision handling
    moved: list[bool]  # reassign_last: the raw ID was taken, the last code moved
    texts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": [
                {"item_id": s, "index": i, "semantic_id": c.tolist(), "raw_codes": r.tolist(), "moved": m}
                for s, i, c, r, m in zip(self.source_ids, self.indices, self.codes, self.raw_codes, self.moved)
            ]
        }


# --------------------------------------------------------------------------- checking input


def _where(prefix: str, row: int, lines: Sequence[int] | None) -> str:
    return f"line {lines[row]}" if lines is not None else f"{prefix}[{row}]"


def check_new_items(
    records: Any, known: Mapping[str, int], text_fields: Sequence[str], *, prefix: str = "items", lines: Sequence[int] | None = None
) -> list[NewItem]:
    """Check records (``{"item_id": ..., "text": ...}`` or ``{"item_id": ..., <text fields>}``; a
    mapping ``{item_id: text}`` is also taken) and raise one ``RequestError`` naming the first bad
    field (``items[3].item_id``, or ``line 4: item_id`` for a file: ``lines`` gives each record's
    line). Duplicate ids, ids already in the catalogue and records without any text are refused."""
    if isinstance(records, Mapping):
        records = [{ID_KEY: k, TEXT_KEY: v} for k, v in records.items()]
    if isinstance(records, (str, bytes)) or not isinstance(records, Sequence):
        raise RequestError(prefix, f"must be a list of items, got {type(records).__name__}")
    if not records:
        raise RequestError(prefix, "no items given")
    if len(records) > MAX_NEW_ITEMS:
        raise RequestError(prefix, f"at most {MAX_NEW_ITEMS} items per call, got {len(records)}")
    fields_allowed = set(text_fields)
    seen: dict[str, int] = {}
    out: list[NewItem] = []
    for row, rec in enumerate(records):
        where = _where(prefix, row, lines)

        def bad(name: str, message: str) -> RequestError:
            return RequestError(f"{where}: {name}" if lines is not None else f"{where}.{name}", message)  # noqa: B023 -- called within this pass

        if not isinstance(rec, Mapping):
            raise RequestError(where, f"an item must be an object with {ID_KEY!r} and {TEXT_KEY!r} or text fields, got {type(rec).__name__}")
        if ID_KEY not in rec or rec[ID_KEY] is None or (isinstance(rec[ID_KEY], str) and not rec[ID_KEY].strip()):
            raise bad(ID_KEY, "missing: every new item needs its id")
        raw_id = rec[ID_KEY]
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int, np.integer)):
            raise bad(ID_KEY, f"must be a string or an integer, got {raw_id!r}")
        sid = str(raw_id).strip()
        problem = id_problem(sid)
        if problem is not None:
            raise bad(ID_KEY, f"{quote_id(sid)} {problem}")
        if sid in known:
            raise bad(ID_KEY, f"{quote_id(sid)} is already in the catalogue (item index {known[sid]}); new items need new ids")
        if sid in seen:
            raise bad(ID_KEY, f"duplicate id {quote_id(sid)} (also {_where(prefix, seen[sid], lines)})")
        seen[sid] = row
        unknown = [k for k in rec if k not in (ID_KEY, TEXT_KEY) and k not in fields_allowed]
        if unknown:
            allowed = ", ".join([TEXT_KEY, *text_fields])
            name = str(unknown[0])
            raise bad(name if len(name) <= 40 and id_problem(name) is None else quote_id(name), f"unknown field; an item has {ID_KEY!r} and {allowed}")
        values: dict[str, str] = {}
        for k, v in rec.items():
            if k == ID_KEY:
                continue
            if v is None:
                continue
            if isinstance(v, float) and math.isnan(v):
                continue
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                raise bad(k, f"must be a string, got {type(v).__name__}")
            text_value = str(v).strip()
            surrogate = next((c for c in text_value if 0xD800 <= ord(c) <= 0xDFFF), None)
            if surrogate is not None:  # cannot be encoded (embedding, Parquet, the JSON answer)
                raise bad(k, f"holds a lone surrogate U+{ord(surrogate):04X}: not valid Unicode text")
            values[k] = text_value
        text = values.pop(TEXT_KEY, None)
        if text is not None and values:
            raise bad(TEXT_KEY, f"give either {TEXT_KEY!r} or text fields ({', '.join(values)}), not both")
        if text is not None and not text:
            raise bad(TEXT_KEY, "is empty")
        if text is None and not any(values.values()):
            needs = ", ".join(text_fields) if text_fields else "(the model's dataset has no text fields)"
            raise bad(TEXT_KEY, f"missing: give the item's text as {TEXT_KEY!r} or as text fields: {needs}")
        out.append(NewItem(sid, values, text))
    return out


def read_items_file(path: str | Path) -> tuple[list[Any], list[int] | None]:
    """Records of a JSONL (one object per line), JSON (a list of objects) or CSV (header line)
    file, and each record's line number (None for a JSON list). Raises ``RequestError`` naming
    the file's line for malformed content."""
    path = Path(path)
    if not path.is_file():
        raise RequestError("FILE", f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError("FILE", f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames:
            raise RequestError("FILE", f"{path}: empty CSV file (expected a header line such as item_id,title)")
        records, lines = [], []
        for rec in reader:
            if None in rec:
                raise RequestError(f"line {reader.line_num}", f"{path}: more values than the header's {len(reader.fieldnames)} columns")
            if any(v is None for v in rec.values()):
                raise RequestError(f"line {reader.line_num}", f"{path}: fewer values than the header's {len(reader.fieldnames)} columns")
            records.append({k: (v if v != "" else None) for k, v in rec.items()})
            lines.append(reader.line_num)
        return records, lines
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RequestError(f"line {exc.lineno}", f"{path}: malformed JSON ({exc.msg})") from None
        if isinstance(data, Mapping) and "items" in data:
            data = data["items"]
        return data, None
    if suffix not in (".jsonl", ".ndjson"):
        raise RequestError("FILE", f"{path}: unknown file type {suffix or '(none)'}; use .jsonl, .json or .csv")
    records, lines = [], []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise RequestError(f"line {n}", f"{path}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        lines.append(n)
    return records, lines


# --------------------------------------------------------------------------- the encoder


def encoder_spec(params: Mapping[str, Any], embed_report: Mapping[str, Any] | None, dataset_info: Mapping[str, Any] | None) -> dict[str, Any]:
    """What embedding a new item's text needs (kept in a bundle's manifest as ``encoder``):
    the embed params, the template resolved, the dataset's text fields, and the vector source the
    embed stage used (from reports/embed.json; ``unknown`` without it)."""
    embed = dict(params.get("embed", {}))
    template = embed.get("template", "auto")
    if template == "auto":
        template = (dataset_info or {}).get("default_template")
    return {
        "source": (embed_report or {}).get("source", "unknown"),
        "mode": embed.get("mode"),
        "model": embed.get("model"),
        "model_path": (embed_report or {}).get("model_path"),
        "template": template,
        "text_fields": list((dataset_info or {}).get("text_fields") or []),
        "max_length": embed.get("max_length"),
        "batch_size": embed.get("batch_size"),
        "dtype": embed.get("dtype"),
        "normalize": embed.get("normalize", True),
        "pca_dim": embed.get("pca_dim"),
        "model_dim": (embed_report or {}).get("model_dim"),
    }


def check_encoder_spec(spec: Mapping[str, Any] | None, where: str) -> None:
    """Raise a ``GenrecError`` saying why new items cannot be embedded like the trained ones."""
    from genrec_core.errors import GenrecError

    if not spec:
        raise GenrecError(f"{where}: has no encoder description (exported before add-items existed); export the model again with `genrec export`")
    if spec.get("source") != "text":
        raise GenrecError(
            f"{where}: the item vectors came from embed.source={spec.get('source')!r}, not from text alone; "
            "a new item has no interactions, so only models trained on text vectors (embed.source text, or auto on a dataset with text) can add items"
        )
    if spec.get("pca_dim"):
        raise GenrecError(
            f"{where}: the item vectors were reduced with PCA (embed.pca_dim={spec['pca_dim']}), which the embed stage does not keep; a new item's "
            "vector cannot be made the same way"
        )
    if not spec.get("template"):
        raise GenrecError(f"{where}: the encoder description has no template")


def render_new_texts(items: Sequence[NewItem], spec: Mapping[str, Any]) -> list[str]:
    """One text per new item: its ``text`` as given, else the template over its fields (missing
    fields are empty and dropped with their label, as the embed stage renders)."""
    import polars as pl

    from genrec_core.embed.text import render_texts, template_fields

    template = spec["template"]
    names = template_fields(template)
    texts: list[str | None] = [it.text for it in items]
    rows = [i for i, it in enumerate(items) if it.text is None]
    if rows:
        frame = pl.DataFrame({n: [items[i].fields.get(n, "") for i in rows] for n in names}, schema={n: pl.String for n in names})
        for i, t in zip(rows, render_texts(frame, template)):
            if not t.strip():
                raise RequestError(f"items[{i}]", f"none of the template's fields ({', '.join(names)}) is given: the item's text would be empty")
            texts[i] = t
    return [str(t) for t in texts]


def build_text_encoder(spec: Mapping[str, Any], device: str = "cpu"):
    from genrec_core.config import EmbedParams
    from genrec_core.embed.encoders import build_encoder

    keys = ("mode", "model", "max_length", "batch_size", "dtype")
    p = EmbedParams(**{k: spec[k] for k in keys if spec.get(k) is not None})
    return build_encoder(p, device)


def embed_texts(encoder: Any, texts: Sequence[str], normalize: bool) -> np.ndarray:
    vectors = np.asarray(encoder.encode(list(texts)), dtype=np.float32)
    if normalize:
        x = vectors.astype(np.float64)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        vectors = (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)  # as the embed stage's l2_normalize
    return vectors


# --------------------------------------------------------------------------- IDs


class UnassignableItem(Exception):
    """A new item whose ID cannot be made (row in the batch, reason)."""

    def __init__(self, row: int, reason: str):
        self.row = row
        self.reason = reason
        super().__init__(reason)


def assign_new_ids(
    codes: np.ndarray, last_residual: np.ndarray, last_codebook: np.ndarray, existing: np.ndarray, mode: str, level_sizes: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """(IDs [m, L'] of the new items, moved [m] bool) given their raw codes [m, L], last residuals
    and the tokenizer's last codebook, against the ``existing`` IDs [N, L'] (never changed).
    See the module docstring; raises ``UnassignableItem``."""
    codes = np.asarray(codes, dtype=np.int64)
    existing = np.asarray(existing, dtype=np.int64)
    m, levels = codes.shape
    sizes = [int(s) for s in level_sizes]
    fixed_levels = levels if mode == "dedup_level" else levels - 1
    for row in range(m):
        for level in range(fixed_levels):
            if codes[row, level] >= sizes[level]:
                raise UnassignableItem(
                    row,
                    f"its code {int(codes[row, level])} at level {level + 1} has no token in the model's vocabulary (the trained table used codes "
                    f"0..{sizes[level] - 1} there)",
                )
    out = np.zeros((m, len(sizes)), dtype=np.int64)
    moved = np.zeros(m, dtype=bool)
    if mode == "dedup_level":
        nxt: dict[tuple, int] = {}
        for row in existing:
            key = tuple(row[:levels].tolist())
            nxt[key] = max(nxt.get(key, 0), int(row[levels]) + 1)
        for i in range(m):
            key = tuple(codes[i].tolist())
            d = nxt.get(key, 0)
            if d >= sizes[levels]:
                raise UnassignableItem(i, f"{d} items already share its codes {list(key)} and the model's dedup level has {sizes[levels]} tokens")
            out[i, :levels], out[i, levels] = codes[i], d
            nxt[key] = d + 1
        return out, moved
    if mode != "reassign_last":
        raise ValueError(f"unknown collision mode {mode!r}")
    used: dict[tuple, set[int]] = {}
    for row in existing:
        used.setdefault(tuple(row[: levels - 1].tolist()), set()).add(int(row[levels - 1]))
    residual = np.asarray(last_residual, dtype=np.float64)
    codebook = np.asarray(last_codebook, dtype=np.float64)
    last_size = sizes[levels - 1]
    for i in range(m):
        prefix = tuple(codes[i, : levels - 1].tolist())
        taken = used.setdefault(prefix, set())
        c = int(codes[i, levels - 1])
        if c in taken or c >= last_size:
            dist = ((residual[i][None, :] - codebook) ** 2).sum(axis=1)
            dist[last_size:] = np.inf
            if taken:
                dist[list(taken)] = np.inf
            if not np.isfinite(dist).any():
                raise UnassignableItem(i, f"all {last_size} last-level codes under its prefix {list(prefix)} are taken")
            c = int(np.argmin(dist))  # ties: the lowest code, as emit-ids
            moved[i] = True
        out[i, : levels - 1], out[i, levels - 1] = codes[i, : levels - 1], c
        taken.add(c)
    return out, moved
