"""Using a trained model (issue 14): the Python API, the bundle, the CLI and the HTTP service agree,
a bundle ranks in a fresh process exactly like the pipeline's best.pt, and every bad input gets
one clear error.

Two tiny workspaces are trained once per module (the stages of tests/test_dvc_dependencies.py's
tiny dataset, 1 epoch): a T5 (tiger) and a SASRec.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")


#: workspace name -> (recommender.model, stages, extra overrides)
KINDS = {
    "tiger": ("tiger", "generative", []),
    "sasrec": ("sasrec", ("preprocess", "train", "evaluate"), []),
    "decoder_only": ("decoder_only", "generative", []),
    "gru4rec": ("gru4rec", ("preprocess", "train", "evaluate"), []),
    "tiger_users": ("tiger", "generative", ["recommender.user_tokens=4"]),  # needs each user's id
}


def _write_params(root: Path, overrides: list[str]) -> None:
    from genrec_core.config import load_params

    params = dataclasses.asdict(load_params(None, overrides))
    (root / "params.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(params))), encoding="utf-8")


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory) -> dict[str, Path]:
    from test_dvc_dependencies import TINY, _tiny_dataset

    from genrec_core.cli import _run_stage

    tmp = tmp_path_factory.mktemp("serving")
    _tiny_dataset(tmp / "raw")
    roots = {}
    threads = torch.get_num_threads()
    generative = ("preprocess", "embed", "train_tokenizer", "emit_ids", "train", "evaluate")
    for name, (model, stages, extra) in KINDS.items():
        root = tmp / name
        root.mkdir()
        _write_params(
            root, [*TINY, f"data.raw_dir={tmp / 'raw'}", f"data.cache_dir={tmp / 'cache'}", "recommender.epochs=1", f"recommender.model={model}", *extra]
        )
        stages = generative if stages == "generative" else stages
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(root)
            for stage in stages:
                _run_stage(stage, root / "params.yaml", [], root)
        roots[name] = root
    torch.set_num_threads(threads)
    return roots


@pytest.fixture(scope="module")
def bundles(workspaces, tmp_path_factory) -> dict[str, Path]:
    from genrec_core.serving.bundle import export_bundle

    out = tmp_path_factory.mktemp("bundles")
    return {kind: export_bundle(root, out / kind) for kind, root in workspaces.items()}


def _test_histories(root: Path) -> tuple[list[list[str]], pl.DataFrame]:
    """The test split's histories in source ids, and the evaluate stage's predictions."""
    items = pl.read_parquet(root / "data/processed/items.parquet").sort("item_id")["source_item_id"].to_list()
    test = pl.read_parquet(root / "data/processed/test.parquet")
    return [[items[i] for i in h] for h in test["history"].to_list()], pl.read_parquet(root / "data/predictions/test.parquet")


def _test_users(root: Path) -> list[str]:
    """The test split's users as the dataset's own user ids."""
    users = dict(pl.read_parquet(root / "data/processed/sequences.parquet").select("user_id", "source_user_id").iter_rows())
    return [users[u] for u in pl.read_parquet(root / "data/processed/test.parquet")["user_id"].to_list()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


# --------------------------------------------------------------------------- API = pipeline


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_api_ranks_the_test_split_like_the_evaluate_stage(workspaces, kind):
    from genrec_core.serving.api import ServingModel
    from genrec_core.serving.errors import RequestError

    rec = ServingModel.load(workspaces[kind])
    histories, preds = _test_histories(workspaces[kind])
    users = _test_users(workspaces[kind]) if rec.needs_user else None
    recs = rec.recommend(histories, k=rec.beam_size, users=users)
    assert [[i.index for i in r.items] for r in recs] == [list(x) for x in preds["items"].to_list()]
    np.testing.assert_allclose([[i.score for i in r.items] for r in recs], np.array(preds["scores"].to_list()), rtol=1e-6)
    first = recs[0].items[0]
    assert first.rank == 1 and first.item_id == rec.catalog.source_ids[first.index] and recs[0].fallback is None
    if rec.needs_user:  # a model with user tokens needs a known user
        for user, words in ((None, "give the user's id"), ("nobody", "unknown user id 'nobody'")):
            with pytest.raises(RequestError, match=words) as err:
                rec.recommend_one(histories[0], 5, user=user)
            assert err.value.field == "user_id"


def test_a_bundle_ranks_in_a_fresh_process_exactly_like_best_pt(workspaces, bundles, tmp_path):
    """The bundles load in a new interpreter with the workspaces moved away."""
    requests = {kind: _test_histories(root)[0] for kind, root in workspaces.items()}
    users = {kind: _test_users(root) for kind, root in workspaces.items() if kind == "tiger_users"}
    (tmp_path / "requests.json").write_text(json.dumps({"bundles": {k: str(v) for k, v in bundles.items()}, "histories": requests, "users": users}))
    script = (
        "import json, sys\n"
        "from genrec_core.serving.api import ServingModel\n"
        "req = json.load(open(sys.argv[1]))\n"
        "out = {}\n"
        "for kind, path in req['bundles'].items():\n"
        "    rec = ServingModel.load(path)\n"
        "    recs = rec.recommend(req['histories'][kind], k=rec.beam_size, users=req['users'].get(kind))\n"
        "    out[kind] = {'items': [[i.index for i in r.items] for r in recs], 'scores': [[i.score for i in r.items] for r in recs]}\n"
        "json.dump(out, open(sys.argv[2], 'w'))\n"
    )
    hidden = {kind: root.rename(root.with_name(root.name + "_hidden")) for kind, root in workspaces.items()}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "requests.json"), str(tmp_path / "out.json")],
            cwd=tmp_path,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        for kind, path in hidden.items():
            path.rename(workspaces[kind])
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads((tmp_path / "out.json").read_text())
    for kind, root in workspaces.items():
        preds = pl.read_parquet(root / "data/predictions/test.parquet")
        assert got[kind]["items"] == [list(x) for x in preds["items"].to_list()]
        np.testing.assert_array_equal(np.array(got[kind]["scores"], dtype=np.float32), np.array(preds["scores"].to_list(), dtype=np.float32))


def test_the_bundle_holds_what_serving_needs_with_hashes(bundles, workspaces):
    from genrec_core.io import sha256_file

    manifest = json.loads((bundles["tiger"] / "manifest.json").read_text())
    assert manifest["format"] == "genrec-bundle" and manifest["format_version"] == 1
    assert {"model.safetensors", "model.json", "items.parquet", "ids.parquet", "item_tokens.safetensors"} <= set(manifest["files"])
    assert any(f.startswith("tokenizer/") for f in manifest["files"])
    assert manifest["params"]["recommender"]["model"] == "t5" and manifest["params"]["data"]["dataset"] == "atomic"
    for name, entry in manifest["files"].items():
        assert sha256_file(bundles["tiger"] / name) == entry["sha256"]
    assert "ids.parquet" not in json.loads((bundles["sasrec"] / "manifest.json").read_text())["files"]


def test_both_storage_forms_load_into_one_serving_model_with_typed_meta(workspaces, bundles):
    """``Recommender`` (the old name) is the serving class; its ``meta`` says where the model came
    from: a workspace's paths, or a bundle's manifest and the sha256 of its bytes."""
    import hashlib

    from genrec_core.serving.api import Recommender, ServingModel
    from genrec_core.serving.meta import ModelMeta

    assert Recommender is ServingModel
    from_bundle, from_workspace = ServingModel.load(bundles["tiger"]), ServingModel.load(workspaces["tiger"])
    assert isinstance(from_bundle.meta, ModelMeta) and isinstance(from_workspace.meta, ModelMeta)
    manifest_bytes = (bundles["tiger"] / "manifest.json").read_bytes()
    assert from_bundle.meta.manifest_sha256 == hashlib.sha256(manifest_bytes).hexdigest()
    assert from_bundle.meta.manifest == json.loads(manifest_bytes) and from_bundle.meta.format_version == 1 and from_bundle.meta.paths is None
    assert from_workspace.meta.paths.root == workspaces["tiger"] and from_workspace.meta.manifest is None and from_workspace.meta.format_version is None
    tokenizer = json.loads(manifest_bytes)["tokenizer"]
    assert from_bundle.meta.tokenizer_path == bundles["tiger"] / "tokenizer" / f"{tokenizer}.pt" and from_bundle.meta.tokenizer_path.is_file()
    assert from_workspace.meta.tokenizer_path == workspaces["tiger"] / "data" / "tokenizer" / "kept" / f"{tokenizer}.pt"
    assert from_bundle.meta.encoder == from_workspace.meta.encoder == json.loads(manifest_bytes)["encoder"] is not None
    assert ServingModel.load(bundles["sasrec"]).meta.tokenizer_path is None  # an item-ID model has no tokenizer


# --------------------------------------------------------------------------- bad input (API, bundle)


def test_bad_requests_raise_one_error_naming_the_field(bundles):
    from genrec_core.serving.api import FALLBACK_POPULAR, ServingModel
    from genrec_core.serving.errors import RequestError

    rec = ServingModel.load(bundles["sasrec"])
    known = rec.catalog.source_ids[:3]
    for kwargs, field, words in [
        ({"history": [known[0], "no-such-item"], "k": 5}, "history", "'no-such-item'"),
        ({"history": known, "k": 0}, "k", ">= 1"),
        ({"history": known, "k": -3}, "k", ">= 1"),
        ({"history": known, "k": rec.num_items + 1}, "k", "number of items"),
        ({"history": known, "k": "5"}, "k", "integer"),
        ({"history": "i1,i2", "k": 5}, "history", "list"),
        ({"history": [known[0], 1.5], "k": 5}, "history[1]", "string or an integer"),
    ]:
        with pytest.raises(RequestError) as err:
            rec.recommend_one(**kwargs)
        assert err.value.field == field and words in str(err.value)
    with pytest.raises(RequestError) as err:  # many histories: the error names the row
        rec.recommend([[known[0]], [known[1], 2.5]], 5)
    assert err.value.field == "histories[1][1]"
    skipped = rec.recommend_one([known[0], "no-such-item"], 5, unknown="skip")
    assert skipped.skipped == ["no-such-item"] and skipped.fallback is None
    assert [i.item_id for i in skipped.items] == [i.item_id for i in rec.recommend_one([known[0]], 5).items]
    for history in ([], ["no-such-item"]):
        empty = rec.recommend_one(history, rec.num_items, unknown="skip")
        assert empty.fallback == FALLBACK_POPULAR and len(empty.items) == rec.num_items
        counts = [i.score for i in empty.items]
        assert counts == sorted(counts, reverse=True) and counts[0] == rec.catalog.train_count.max()
    assert rec.recommend_one(known, rec.num_items).items  # k = the whole catalogue is allowed


def test_a_bundle_that_was_changed_or_has_another_version_fails_with_one_line(bundles, tmp_path):
    import shutil

    from genrec_core.serving.api import ServingModel
    from genrec_core.serving.errors import BundleError

    cases = {}
    for name in ("tampered", "version", "missing"):
        cases[name] = tmp_path / name
        shutil.copytree(bundles["sasrec"], cases[name])
    with (cases["tampered"] / "items.parquet").open("ab") as fh:
        fh.write(b"x")
    manifest = json.loads((cases["version"] / "manifest.json").read_text())
    manifest["format_version"] = 999
    (cases["version"] / "manifest.json").write_text(json.dumps(manifest))
    (cases["missing"] / "model.safetensors").unlink()
    for name, words in (("tampered", "sha256"), ("version", "format version 999"), ("missing", "missing from the bundle")):
        with pytest.raises(BundleError) as err:
            ServingModel.from_bundle(cases[name])
        assert words in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(BundleError, match="not a genrec bundle"):
        ServingModel.from_bundle(tmp_path)


# --------------------------------------------------------------------------- CLI


def _cli(*args: str):
    from typer.testing import CliRunner

    from genrec_core.cli import app

    return CliRunner().invoke(app, list(args))


def _table_items(output: str) -> list[str]:
    rows = [line.split() for line in output.splitlines() if line and not line.startswith("#")]
    assert rows[0] == ["rank", "item_id", "title", "score"]
    return [r[1] for r in rows[1:]]


def test_the_cli_agrees_with_the_api_on_one_history_and_on_files(bundles, tmp_path):
    from genrec_core.serving.api import ServingModel

    rec = ServingModel.load(bundles["tiger"])
    histories = [rec.catalog.source_ids[:3], rec.catalog.source_ids[5:7], [], [rec.catalog.source_ids[9]]]
    expected = [[i.item_id for i in r.items] for r in rec.recommend(histories, k=5)]

    result = _cli("recommend", "-m", str(bundles["tiger"]), "--history", ",".join(histories[0]), "-k", "5")
    assert result.exit_code == 0, result.output
    assert _table_items(result.output) == expected[0]

    (tmp_path / "in.csv").write_text("user_id,history\n" + "".join(f'u{i},"{",".join(h)}"\n' for i, h in enumerate(histories)))
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"user_id": f"u{i}", "history": h}) + "\n" for i, h in enumerate(histories)))
    pl.DataFrame(
        {"user_id": [f"u{i}" for i in range(len(histories))], "history": histories}, schema={"user_id": pl.String, "history": pl.List(pl.String)}
    ).write_parquet(tmp_path / "in.parquet")
    for name in ("in.csv", "in.jsonl", "in.parquet"):
        out = tmp_path / f"{name}.out.parquet"
        result = _cli("recommend", "-m", str(bundles["tiger"]), "--input", str(tmp_path / name), "--output", str(out), "-k", "5")
        assert result.exit_code == 0, result.output
        df = pl.read_parquet(out)
        assert df["item_ids"].to_list() == expected, name
        assert df["user_id"].to_list() == ["u0", "u1", "u2", "u3"] and df["fallback"].to_list() == [None, None, "most_popular", None]


def test_cli_errors_are_one_line_with_a_non_zero_exit_and_no_output_file(bundles, tmp_path):
    bundle = str(bundles["tiger"])
    (tmp_path / "bad.jsonl").write_text(json.dumps({"history": ["nope"]}) + "\n")
    (tmp_path / "broken.jsonl").write_text('{"history": [\n')
    out = tmp_path / "out.parquet"
    cases = [
        (["recommend", "-m", bundle, "--history", "nope,zilch"], "'nope', 'zilch'"),
        (["recommend", "-m", bundle, "--history", "x", "-k", "0"], "k: must be >= 1"),
        (["recommend", "-m", bundle, "--history", "x", "-k", "1000"], "number of items"),
        (["recommend", "-m", bundle, "--input", str(tmp_path / "bad.jsonl"), "--output", str(out)], "bad.jsonl:1: history: unknown item id(s) 'nope'"),
        (["recommend", "-m", bundle, "--input", str(tmp_path / "broken.jsonl"), "--output", str(out)], "broken.jsonl:1: invalid JSON"),
        (["recommend", "-m", bundle], "exactly one of --history or --input"),
        (["recommend", "-m", str(tmp_path / "nowhere"), "--history", "x"], "file not found"),
        (["export", str(bundles["sasrec"].parent), "--root", str(tmp_path)], "already exists"),
    ]
    for args, words in cases:
        result = _cli(*args)
        assert result.exit_code == 2, (args, result.output)
        lines = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and words in lines[0], (args, result.output)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out.parquet")]
    result = _cli("recommend", "-m", bundle, "--history", "nope", "--skip-unknown", "-k", "3")
    assert result.exit_code == 0 and "most_popular" in result.output and "nope" in result.output


# --------------------------------------------------------------------------- HTTP


@pytest.fixture(scope="module")
def server(bundles):
    """``genrec serve BUNDLE`` in a subprocess on a free port (workspace not needed)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "genrec_core.cli", "serve", str(bundles["tiger"]), "--port", str(port), "--max-wait-ms", "50"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"genrec serve exited: {proc.stdout.read()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline:
                pytest.fail("genrec serve did not start within 180 s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_http_agrees_with_the_api_and_batches_concurrent_requests(server, bundles):
    from genrec_core.serving.api import ServingModel

    rec = ServingModel.load(bundles["tiger"])
    histories = [rec.catalog.source_ids[i : i + 3] for i in range(0, 18)]
    expected = rec.recommend(histories, k=5)
    with httpx.Client(base_url=server, timeout=60) as client, concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda h: client.post("/recommend", json={"history": h, "k": 5}), histories))
        health = client.get("/health").json()
    for answer, want in zip(answers, expected):
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert [i["item_id"] for i in body["items"]] == [i.item_id for i in want.items]
        np.testing.assert_allclose([i["score"] for i in body["items"]], [i.score for i in want.items], rtol=1e-4, atol=1e-5)
        assert body["fallback"] is None and body["model"] == "t5" and body["k"] == 5
    assert health["status"] == "ok" and health["requests"] >= len(histories) and health["largest_batch"] > 1  # served in batches


def test_http_bad_inputs_are_4xx_json_naming_the_field_and_the_server_survives(server, bundles):
    from genrec_core.serving.api import ServingModel

    rec = ServingModel.load(bundles["tiger"])
    known = rec.catalog.source_ids[:2]
    post = lambda **kw: httpx.post(f"{server}/recommend", timeout=30, **kw)  # noqa: E731
    cases = [
        (post(json={"history": [known[0], "no-such-item"], "k": 5}), 422, "history", "no-such-item"),
        (post(json={"history": known, "k": 0}), 422, "k", ">= 1"),
        (post(json={"history": known, "k": rec.num_items + 1}), 422, "k", "number of items"),
        (post(json={"history": known, "k": "ten"}), 422, "k", "integer"),
        (post(json={"history": [known[0], 1.5]}), 422, "history.1", "string"),
        (post(json={"history": known, "colour": "red"}), 422, "colour", "Extra"),
        (post(json=[1, 2]), 422, "body", "object"),
        (post(content=b'{"history": [', headers={"content-type": "application/json"}), 400, "body", "malformed JSON"),
        (post(), 415, "content-type", "must be JSON"),
        (post(json={"history": known, "k": 101}), 422, "k", "--max-k"),
    ]
    for response, status, field, words in cases:
        assert response.status_code == status, response.text
        body = response.json()
        assert body["field"] == field and words in body["error"], body
    empty = post(json={"history": [], "k": 4}).json()
    assert empty["fallback"] == "most_popular" and len(empty["items"]) == 4
    skipped = post(json={"history": ["no-such-item", known[0]], "k": 4, "skip_unknown": True}).json()
    assert skipped["skipped"] == ["no-such-item"] and [i["item_id"] for i in skipped["items"]] == [i.item_id for i in rec.recommend_one([known[0]], 4).items]
    # writes are off: the server was started without --allow-writes (tests/test_serving_guard.py, tests/test_cold_start.py add items)
    refused = httpx.post(f"{server}/items", json={"items": [{"item_id": "new", "text": "x"}]}, timeout=30)
    assert refused.status_code == 403 and "--allow-writes" in refused.json()["error"]
    assert httpx.get(f"{server}/docs", timeout=30).status_code == 200
    assert "/recommend" in httpx.get(f"{server}/openapi.json", timeout=30).json()["paths"]
    assert httpx.get(f"{server}/health", timeout=30).json()["status"] == "ok"


def test_serve_refuses_a_bundle_of_another_format_version(bundles, tmp_path):
    import shutil

    bundle = tmp_path / "old"
    shutil.copytree(bundles["sasrec"], bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["format_version"] = 0
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = _cli("serve", str(bundle), "--port", str(_free_port()))
    assert result.exit_code == 2 and "bundle format version 0" in result.output and "error:" in result.output
