"""Many users at once: histories from CSV / Parquet / JSONL in, one Parquet of recommendations out.

Input: one row per user with a ``history`` column (the dataset's own item ids, oldest first) and
an optional ``user_id`` column carried through (and used by models with user tokens).
- CSV: ``history`` is a string of ids separated by commas (quote it), e.g. ``u1,"i3,i9,i4"``;
- Parquet: ``history`` is a list of strings / integers, or such a comma-separated string;
- JSONL: one object per line, ``{"history": ["i3", "i9"], "user_id": "u1"}`` (a string history
  is split on commas too).
An empty history is allowed (it gets the popularity fallback).

Output (``write_recommendations``): ``row`` (0-based input row), ``user_id`` (when given),
``item_ids`` / ``titles`` / ``scores`` (lists, best first), ``fallback`` (null or
"most_popular"), ``skipped`` (unknown ids dropped under --skip-unknown). Written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from genrec_core.errors import InputFormatError, MissingInputError
from genrec_core.serving.api import Recommendation, ServingModel
from genrec_core.serving.errors import RequestError

INPUT_SUFFIXES = (".csv", ".parquet", ".jsonl", ".ndjson")


def split_history(text: str | None) -> list[str]:
    """``"i1, i2,i3"`` -> ``["i1", "i2", "i3"]`` (empty entries dropped; None or "" -> [])."""
    if text is None:
        return []
    return [part.strip() for part in str(text).split(",") if part.strip()]


def _history_value(value: Any, path: Path, line: int) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return split_history(value)
    if isinstance(value, (list, tuple)):
        out = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, (str, int)):
                raise InputFormatError(path, f"history: an item id must be a string or an integer, got {item!r}", line)
            out.append(str(item).strip())
        return out
    raise InputFormatError(path, f"history: expected a list of item ids or a comma-separated string, got {type(value).__name__}", line)


def read_requests(path: str | Path) -> tuple[list[list[str]], list[str] | None, list[int]]:
    """(histories, user ids or None, the 1-based line / row number of each) from a request file."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(path, "the request file")
    suffix = path.suffix.lower()
    if suffix not in INPUT_SUFFIXES:
        raise InputFormatError(path, f"unknown request file type {suffix or '(none)'}; use one of {', '.join(INPUT_SUFFIXES)}")
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path)
    try:
        df = pl.read_csv(path, infer_schema_length=0) if suffix == ".csv" else pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputFormatError(path, f"unreadable {suffix[1:]} file: {str(exc).splitlines()[0]}") from None
    if "history" not in df.columns:
        raise InputFormatError(path, f"missing column 'history'; columns: {df.columns}")
    first = 2 if suffix == ".csv" else 1  # CSV: line 1 is the header
    histories = [_history_value(v, path, first + i) for i, v in enumerate(df["history"].to_list())]
    users = [None if u is None else str(u) for u in df["user_id"].to_list()] if "user_id" in df.columns else None
    return histories, users, [first + i for i in range(df.height)]


def _read_jsonl(path: Path) -> tuple[list[list[str]], list[str] | None, list[int]]:
    histories: list[list[str]] = []
    users: list[str | None] = []
    lines: list[int] = []
    with path.open(encoding="utf-8") as fh:
        for number, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputFormatError(path, f"invalid JSON ({exc.msg})", number) from None
            if not isinstance(obj, dict):
                raise InputFormatError(path, "each line must be a JSON object with a 'history'", number)
            if "history" not in obj:
                raise InputFormatError(path, "missing field 'history'", number)
            histories.append(_history_value(obj["history"], path, number))
            users.append(None if obj.get("user_id") is None else str(obj["user_id"]))
            lines.append(number)
    return histories, (users if any(u is not None for u in users) else None), lines


def recommend_file(rec: ServingModel, path: str | Path, k: int, unknown: str = "error", progress: bool = True) -> tuple[list[Recommendation], list[str] | None]:
    """Rank every request of a file; a bad row raises an error naming its line."""
    path = Path(path)
    histories, users, lines = read_requests(path)
    rec.check_k(k)
    prepared = []
    for i, history in enumerate(histories):
        try:
            prepared.append(rec.prepare(history, k, None if users is None else users[i], unknown))
        except RequestError as exc:
            raise InputFormatError(path, f"{exc.field}: {exc.message}", lines[i]) from None
    return rec.rank_prepared(prepared, progress=progress), users


def recommendations_frame(recs: list[Recommendation], users: list[str] | None = None) -> pl.DataFrame:
    data: dict[str, Any] = {"row": list(range(len(recs)))}
    if users is not None:
        data["user_id"] = users
    data.update(
        {
            "item_ids": [[i.item_id for i in r.items] for r in recs],
            "titles": [[i.title for i in r.items] for r in recs],
            "scores": [[i.score for i in r.items] for r in recs],
            "fallback": [r.fallback for r in recs],
            "skipped": [list(r.skipped) for r in recs],
        }
    )
    schema = {
        "row": pl.Int64,
        "user_id": pl.String,
        "item_ids": pl.List(pl.String),
        "titles": pl.List(pl.String),
        "scores": pl.List(pl.Float64),
        "fallback": pl.String,
        "skipped": pl.List(pl.String),
    }
    return pl.DataFrame(data, schema={k: v for k, v in schema.items() if k in data})


def write_recommendations(recs: list[Recommendation], users: list[str] | None, path: str | Path) -> Path:
    from genrec_core.io import write_parquet

    return write_parquet(recommendations_frame(recs, users), path)
