"""The chunked JSON-lines reader against one-shot references (pieces must not change a row)."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest

from genrec_core.data.readers import iter_line_chunks, read_json_lines
from genrec_core.errors import InputFormatError

FIELDS = {"user_id": pl.String, "parent_asin": pl.String, "timestamp": pl.Int64, "tags": pl.List(pl.String)}
ROWS = [
    {"user_id": "U1", "parent_asin": "P1", "timestamp": 1588687728923, "tags": ["a", "b"], "text": "x" * 300},
    {"user_id": "Ü2 ünïcödé ✓", "parent_asin": "P2", "timestamp": 1, "tags": [], "images": [{"u": "v"}]},
    {"user_id": "U3", "parent_asin": "P3", "timestamp": -5},  # no tags: null
    {"user_id": "U4", "parent_asin": ["P4"], "timestamp": 7, "tags": None},  # a list read as its JSON text
    {"parent_asin": "P5", "timestamp": 8, "tags": ["c"]},  # missing key: null
]
# Blank lines, CRLF endings, surrounding spaces and no final newline, as files in the wild have.
CONTENT = (
    "\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS[:2])
    + "\n\n   \n"
    + json.dumps(ROWS[2])
    + "\r\n"
    + "  "
    + json.dumps(ROWS[3])
    + "  \n"
    + json.dumps(ROWS[4])
).encode("utf-8")
CHUNKS = (1, 7, 64, 1000, 1 << 26)


@pytest.fixture(params=[False, True], ids=["plain", "gz"])
def path(request, tmp_path):
    def write(data: bytes):
        if request.param:
            p = tmp_path / "f.jsonl.gz"
            p.write_bytes(gzip.compress(data))
        else:
            p = tmp_path / "f.jsonl"
            p.write_bytes(data)
        return p

    return write


def test_pieces_are_whole_lines_and_cover_the_file(path):
    p = path(CONTENT)
    for chunk_bytes in CHUNKS:
        pieces = list(iter_line_chunks(p, chunk_bytes))
        assert b"".join(pieces) == CONTENT
        assert all(piece.endswith(b"\n") for piece in pieces[:-1])


def test_chunked_read_equals_one_read_and_a_python_reference(path):
    p = path(CONTENT)
    one_shot = pl.read_ndjson(CONTENT, schema=FIELDS, ignore_errors=False)  # what polars gives for the whole file
    assert one_shot.to_dicts()[0]["user_id"] == "U1" and one_shot.height == len(ROWS)
    for chunk_bytes in CHUNKS:
        got = read_json_lines(p, FIELDS, chunk_bytes=chunk_bytes)
        assert got.schema == one_shot.schema
        assert got.equals(one_shot), chunk_bytes
        # and what json.loads says, line by line
        for row, obj in zip(got.to_dicts(), ROWS):
            assert row["user_id"] == obj.get("user_id") and row["timestamp"] == obj["timestamp"]
            assert row["tags"] == obj.get("tags")
            assert row["parent_asin"] == (obj["parent_asin"] if isinstance(obj["parent_asin"], str) else json.dumps(obj["parent_asin"]))


def test_empty_and_blank_files_give_no_rows(path):
    for data in (b"", b"\n \n\r\n"):
        got = read_json_lines(path(data), FIELDS, chunk_bytes=4)
        assert got.height == 0 and got.schema == pl.Schema(FIELDS)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (b'{"user_id": "U9", "parent_asin": "P9", "timestamp": 16', "malformed JSON"),
        (b'{"user_id": "U9", "parent_asin": "P9", "timestamp": "soon"}', "timestamp must be an integer"),
        (b'{"user_id": "U\xff", "parent_asin": "P9", "timestamp": 1}', "UTF-8"),
        (b"[1, 2]", "JSON object"),
    ],
)
def test_a_malformed_line_is_named_whatever_the_piece_size(path, bad, message):
    # line 4 is bad, after a blank line (line numbers count every line of the file)
    data = b"\n".join([json.dumps(ROWS[0]).encode(), b"", json.dumps(ROWS[1]).encode(), bad, json.dumps(ROWS[2]).encode()]) + b"\n"
    p = path(data)

    def check(obj):
        return None if isinstance(obj["timestamp"], int) else f"timestamp must be an integer, got {obj['timestamp']!r}"

    for chunk_bytes in CHUNKS:
        with pytest.raises(InputFormatError, match=message) as err:
            read_json_lines(p, FIELDS, required=("user_id", "parent_asin", "timestamp"), check=check, chunk_bytes=chunk_bytes)
        assert err.value.line == 4
        assert err.value.path == str(p)
