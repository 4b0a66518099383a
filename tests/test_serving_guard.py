"""The HTTP service in front of other people (issue 26): writes need --allow-writes and the
bearer token, Host and Content-Type are checked, every limit is answered as documented (413 /
422 / 503 naming its option), clients that went are not ranked, a 500 tells nothing but a
request id, and a save never overwrites another writer's bundle.

Uses tests/test_bundle_writes.py's tiny text-vector tiger (trained once per module).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import threading
from pathlib import Path

import httpx
import pytest
from test_bundle_writes import master, workspace  # noqa: F401 - module fixtures

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def bundle(master, tmp_path) -> Path:  # noqa: F811
    return Path(shutil.copytree(master, tmp_path / "b"))


@pytest.fixture
def rec(bundle):
    from genrec_core.serving.api import ServingModel

    return ServingModel.load(bundle)


def _client(app, **kwargs):
    from fastapi.testclient import TestClient

    return TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False, **kwargs)


def _cli(*args: str, env: dict | None = None):
    from typer.testing import CliRunner

    from genrec_core.cli import app

    return CliRunner().invoke(app, list(args), env=env)


def _lifespan(app):
    return app.router.lifespan_context(app)


NEW = {"items": [{"item_id": "web1", "title": "Added over HTTP"}]}


# --------------------------------------------------------------------------- who may write


def test_writes_are_off_unless_allowed_and_then_need_the_bearer_token(rec, monkeypatch):
    from genrec_core.serving import guard
    from genrec_core.serving.http import create_app

    n = rec.num_items
    with _client(create_app(rec)) as client:  # default: writes off
        r = client.post("/items", json=NEW, headers=AUTH)
        assert r.status_code == 403 and r.json()["field"] == "authorization" and "--allow-writes" in r.json()["error"]
        assert client.post("/recommend", json={"history": rec.catalog.source_ids[:2], "k": 3}).status_code == 200  # reads stay open
    assert rec.num_items == n
    compared = []
    real = guard.hmac.compare_digest
    monkeypatch.setattr(guard.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    with _client(create_app(rec, write_token=TOKEN)) as client:
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789abc"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}):
            r = client.post("/items", json=NEW, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and r.json()["field"] == "authorization", (headers, r.text)
        assert rec.num_items == n
        r = client.post("/items", json=NEW, headers=AUTH)
        assert r.status_code == 200 and r.json()["items"] == n + 1, r.text
        assert client.get("/health").json()["writes"] is True
    assert compared  # the token went through hmac.compare_digest


def test_serve_refuses_allow_writes_without_a_good_token(bundle, tmp_path):
    res = _cli("serve", str(bundle), "--allow-writes", env={"GENREC_TOKEN": ""})
    assert res.exit_code == 2 and "--allow-writes needs a token" in res.output, res.output
    (tmp_path / "token").write_text("short\n")
    res = _cli("serve", str(bundle), "--allow-writes", "--token-file", str(tmp_path / "token"))
    assert res.exit_code == 2 and "at least 16" in res.output, res.output
    res = _cli("serve", str(bundle), "--max-k", "0")
    assert res.exit_code == 2 and "--max-k must be a positive number" in res.output, res.output


def test_the_host_header_must_be_an_allowed_name(rec):
    from fastapi.testclient import TestClient

    from genrec_core.serving.http import create_app

    body = {"history": rec.catalog.source_ids[:2], "k": 3}
    with _client(create_app(rec)) as client:
        assert client.post("/recommend", json=body).status_code == 200
        assert client.post("/recommend", json=body, headers={"host": "localhost:8000"}).status_code == 200
        assert client.post("/recommend", json=body, headers={"host": "attacker.example"}).status_code == 400
    with TestClient(create_app(rec, allowed_hosts=["api.example.org"]), base_url="http://api.example.org") as client:
        assert client.post("/recommend", json=body).status_code == 200


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonp"])
def test_a_body_that_is_not_json_is_refused_before_any_endpoint(rec, content_type):
    """A cross-site form post (no pre-flight) cannot reach /items or /recommend, whatever FastAPI does."""
    from genrec_core.serving.http import create_app

    n = rec.num_items
    headers = {**AUTH, **({"content-type": content_type} if content_type else {})}
    with _client(create_app(rec, write_token=TOKEN)) as client:
        for path, payload in (("/items", NEW), ("/recommend", {"history": rec.catalog.source_ids[:2], "k": 3})):
            r = client.post(path, content=json.dumps(payload).encode(), headers=headers)
            assert r.status_code == 415 and r.json()["field"] == "content-type", (path, r.text)
        assert rec.num_items == n
        r = client.post("/recommend", content=json.dumps({"history": [], "k": 2}).encode(), headers={"content-type": "application/json; charset=utf-8"})
        assert r.status_code == 200


# --------------------------------------------------------------------------- limits


def test_each_limit_is_answered_with_its_status_naming_its_option(rec):
    from genrec_core.serving.http import create_app
    from genrec_core.serving.limits import ServeLimits

    ids = rec.catalog.source_ids
    limits = ServeLimits(max_body_bytes=2000, max_history=50, max_k=5, max_new_items=2, max_text_chars=30)
    long_history = [ids[i % len(ids)] for i in range(40)]
    assert rec.max_len < len(long_history) <= limits.max_history
    with _client(create_app(rec, write_token=TOKEN, limits=limits), headers=AUTH) as client:
        cases = [
            (client.post("/recommend", json={"history": ["x" * 100] * 25, "k": 3}), 413, "body", "--max-body-bytes"),
            (
                client.post("/recommend", content=iter([b'{"history": [', b'"i1", ' * 400, b'"i2"]}']), headers={"content-type": "application/json"}),
                413,
                "body",
                "--max-body-bytes",
            ),
            (client.post("/recommend", json={"history": [ids[0]] * 51, "k": 3}), 422, "history", "--max-history"),
            (client.post("/recommend", json={"history": ids[:2], "k": 6}), 422, "k", "--max-k"),
            (client.post("/items", json={"items": [{"item_id": f"n{i}", "title": "t"} for i in range(3)]}), 413, "items", "--max-new-items"),
            (client.post("/items", json={"items": [{"item_id": "n1", "title": "t" * 31}]}), 422, "items[0].title", "--max-text-chars"),
        ]
        for response, status, field, option in cases:
            assert response.status_code == status and response.json()["field"] == field and option in response.json()["error"], response.text
        # within the caps: a history longer than the model's window ranks as its last items, as in training
        r = client.post("/recommend", json={"history": long_history, "k": 5})
        assert r.status_code == 200
        assert [i["item_id"] for i in r.json()["items"]] == [i.item_id for i in rec.recommend_one(long_history[-rec.max_len :], k=5).items]
        assert client.post("/items", json={"items": [{"item_id": "n1", "title": "t" * 30}]}).status_code == 200


def _blocking_rank(rec, monkeypatch) -> threading.Event:
    """Make ranking wait until the returned event is set (a busy server, deterministically)."""
    release = threading.Event()
    real = rec.rank_prepared

    def slow(prepared, progress=False):
        release.wait(60)
        return real(prepared, progress)

    monkeypatch.setattr(rec, "rank_prepared", slow)
    return release


def test_a_full_queue_and_a_request_over_its_time_answer_503(rec, monkeypatch):
    from genrec_core.serving.http import create_app
    from genrec_core.serving.limits import ServeLimits

    body = {"history": rec.catalog.source_ids[:2], "k": 3}
    release = _blocking_rank(rec, monkeypatch)
    app = create_app(rec, max_wait_ms=0, max_batch=1, limits=ServeLimits(max_queue=1, request_timeout_s=0.5))

    async def scenario():
        async with _lifespan(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
            batcher = app.state.batcher
            first = asyncio.ensure_future(client.post("/recommend", json=body))
            while batcher.requests < 1:  # the worker took it and is ranking (blocked)
                await asyncio.sleep(0.01)
            second = asyncio.ensure_future(client.post("/recommend", json=body))
            while batcher.queue.qsize() < 1:  # waiting in the queue
                await asyncio.sleep(0.01)
            third = await client.post("/recommend", json=body)
            answers = [await first, await second]
            release.set()
            return third, answers, batcher.refused

    third, (first, second), refused = asyncio.run(scenario())
    assert third.status_code == 503 and third.json()["field"] == "queue" and "--max-queue" in third.json()["error"] and refused == 1
    for r in (first, second):  # ranking never came back within 0.5 s
        assert r.status_code == 503 and r.json()["field"] == "timeout" and "--request-timeout-s" in r.json()["error"]


def test_a_client_that_went_away_is_dropped_before_ranking(rec, monkeypatch):
    from genrec_core.serving.http import create_app

    ranked = []
    real = rec.rank_prepared
    monkeypatch.setattr(rec, "rank_prepared", lambda prepared, progress=False: ranked.append(len(prepared)) or real(prepared, progress))
    app = create_app(rec, max_wait_ms=300, max_batch=2)  # the worker waits 0.3 s for a second request
    body = json.dumps({"history": rec.catalog.source_ids[:2], "k": 3}).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/recommend", "raw_path": b"/recommend", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip

    async def scenario():
        messages = iter([{"type": "http.request", "body": body, "more_body": False}])

        async def receive():  # the body, then the client is gone
            return next(messages, {"type": "http.disconnect"})

        async def send(message):
            pass

        async with _lifespan(app):
            await app(scope, receive, send)
            batcher = app.state.batcher
            while batcher.dropped + batcher.batches < 1:
                await asyncio.sleep(0.01)
            return batcher.dropped, batcher.batches

    dropped, batches = asyncio.run(scenario())
    assert (dropped, batches) == (1, 0) and ranked == []


# --------------------------------------------------------------------------- errors tell nothing


def test_a_500_answer_carries_a_request_id_and_no_exception_text(rec, monkeypatch, caplog):
    from genrec_core.serving.http import create_app

    def broken(prepared, progress=False):
        raise RuntimeError("secret detail at /srv/models/private")

    with _client(create_app(rec)) as client:
        # a lone surrogate in a history is a 422 naming the row, never a 500 while writing the answer
        raw = b'{"history": ["\\ud800"], "k": 3, "skip_unknown": true}'  # JSON's escape of a lone surrogate
        r = client.post("/recommend", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["field"] == "history[0]", r.text
        monkeypatch.setattr(rec, "rank_prepared", broken)
        with caplog.at_level(logging.ERROR, logger="genrec_core.serving.http"):
            r = client.post("/recommend", json={"history": rec.catalog.source_ids[:2], "k": 3})
    assert r.status_code == 500
    text, request_id = r.text, r.headers["x-request-id"]
    assert "secret" not in text and "RuntimeError" not in text and "/srv" not in text
    assert request_id in r.json()["error"] and len(request_id) == 32
    logged = [rec_ for rec_ in caplog.records if request_id in rec_.getMessage()]
    assert logged and "secret detail" in str(logged[0].exc_info[1])


def test_unknown_ids_are_quoted_truncated(rec):
    from genrec_core.serving.http import create_app

    history = [f"unknown-{i}-" + "z" * 5000 for i in range(30)]
    with _client(create_app(rec)) as client:
        r = client.post("/recommend", json={"history": history, "k": 3})
    assert r.status_code == 422 and r.json()["field"] == "history"
    error = r.json()["error"]
    assert len(error) < 1500 and "'unknown-0-zzz" in error and "and 20 more" in error


# --------------------------------------------------------------------------- saves over HTTP


def test_a_save_over_a_bundle_another_writer_changed_answers_409_and_keeps_its_items(bundle, rec):
    from genrec_core.serving.api import ServingModel
    from genrec_core.serving.bundle import write_added_items
    from genrec_core.serving.http import create_app

    other = ServingModel.load(bundle)
    other.add_items([{"item_id": "cli-item", "title": "Added by the CLI"}])
    write_added_items(other, bundle)
    with _client(create_app(rec, write_token=TOKEN), headers=AUTH) as client:
        r = client.post("/items", json={**NEW, "save": True})
        assert r.status_code == 409 and r.json()["field"] == "save" and "changed since it was loaded" in r.json()["error"], r.text
        assert client.post("/recommend", json={"history": ["web1"], "k": 3}).status_code == 200  # added in memory
    on_disk = ServingModel.load(bundle).catalog.source_ids
    assert "cli-item" in on_disk and "web1" not in on_disk


# --------------------------------------------------------------------------- the command


def test_serve_help_shows_every_limit_with_the_library_default():
    import typer

    from genrec_core.cli import app
    from genrec_core.serving.limits import OPTIONS, ServeLimits

    res = _cli("serve", "--help", env={"COLUMNS": "250"})
    assert res.exit_code == 0
    params = {p.opts[0]: p.default for p in typer.main.get_command(app).commands["serve"].params if p.opts}
    defaults = ServeLimits()
    for field, option in OPTIONS.items():
        assert option in res.output and params[option] == getattr(defaults, field), option
    for option in ("--allow-writes", "--token-file", "--allowed-host", "--forwarded-allow-ips"):
        assert option in res.output
