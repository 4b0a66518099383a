"""A million-item catalogue through the pipeline's own code: peak memory and seconds per step.

Each step runs in its own child process (this script with ``--step``), so its peak RSS
(``ru_maxrss``, which includes the ~0.5 GiB of imported libraries every child pays, the ``baseline``
row) is its own; the parent polls the child's RSS and kills it above ``--rss-limit-gib``. Steps:

- ``texts``: the embed stage's item texts (``render_texts``) for all ``--items`` synthetic items;
- ``embed-<n>``: the real embed stage (the default MiniLM encoder, streamed in chunks of
  ``--embed-chunk`` items) on the first n synthetic items, for each ``--embed-items``:
  encoding a million texts on this CPU takes hours, so the 1M time is projected from the rate;
- ``vectors``: seeded synthetic clustered 384-d unit vectors (a Gaussian mixture with long-tailed
  cluster sizes, like MiniLM output) for all items, generated and written chunk by chunk with the
  embed stage's own streamed writer (``genrec_core.embed.stream.write_vectors``); every later step reads them;
- ``log``: a long-tailed (Zipf) interaction log of ``--log-users`` users, whose first ``--users``
  histories are decoded by ``beam``;
- ``rqvae`` / ``rqkmeans``: the train-tokenizer stage (``--rqvae-epochs`` epochs, ``--kmeans-iters``
  Lloyd iterations per level; params.yaml otherwise, codebook_size auto);
- ``emit-rqvae`` / ``emit-rqkmeans``: the emit-ids stage (quantise every item, ``--collision`` handling);
- ``trie``: ``ItemTrie.build`` over the RQ-VAE ID table (what train/evaluate build);
- ``beam``: ``rank_examples`` (evaluate's routine: trie-constrained beam search, params.yaml's
  evaluate.beam_size and batch_size) of a randomly initialised ``recommender.model`` (params.yaml:
  decoder_only at its default size) over the 1M-item trie for ``--users`` users.

Stages run in-process as ``genrec <stage> --root <workdir>/<step> -S ...`` runs them (``cli._run_stage``).

    python benchmarks/large_catalogue.py --items 5000 --embed-items 500 1000      # smoke run, ~2 min
    python benchmarks/large_catalogue.py --items 1000000 --out reports/benchmarks/large_catalogue.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.procmem import rss_gib  # noqa: E402

DIM = 384
TEMPLATE = "{title}. Category: {category}. Brand: {brand}."
WORDS = (
    "wireless compact premium classic portable deluxe vintage ultra smart organic heavy light mini pro "
    "stainless bamboo leather cotton steel carbon acoustic digital electric travel outdoor kitchen garden"
).split()
NOUNS = (
    "guitar strings headphones kettle backpack lamp notebook tripod speaker blender jacket boots charger "
    "keyboard mouse pan knife tent bottle watch camera cable stand case pedal amplifier microphone"
).split()
CATEGORIES = ["Musical Instruments", "Electronics", "Home & Kitchen", "Sports & Outdoors", "Office Products", "Clothing", "Toys & Games", "Tools"]


# --------------------------------------------------------------------------- synthetic inputs


def synthetic_items(n: int, seed: int = 0):
    """Items 0..n-1 with Amazon-like titles, a category and a brand (seeded; item i is the same for any n)."""
    import polars as pl

    rng = np.random.default_rng(seed)
    big = max(n, 1)
    w1, w2, nn = (rng.integers(0, len(x), big)[:n] for x in (WORDS, WORDS, NOUNS))
    model_no = rng.integers(100, 100_000, big)[:n]
    cat = rng.integers(0, len(CATEGORIES), big)[:n]
    brand = rng.zipf(1.3, big)[:n] % 5000
    words, nouns = np.array(WORDS), np.array(NOUNS)
    titles = np.char.add(np.char.add(np.char.add(np.char.add(words[w1], " "), words[w2]), " "), nouns[nn])
    titles = np.char.add(np.char.add(titles, " model "), model_no.astype(str))
    return pl.DataFrame(
        {
            "item_id": pl.Series(np.arange(n), dtype=pl.Int32),
            "source_item_id": [f"B{i:09d}" for i in range(n)],
            "title": titles.tolist(),
            "category": np.array(CATEGORIES)[cat].tolist(),
            "brand": [f"Brand{b}" for b in brand.tolist()],
        }
    )


def write_processed(root: Path, n: int) -> None:
    d = root / "data" / "processed"
    d.mkdir(parents=True, exist_ok=True)
    synthetic_items(n).write_parquet(d / "items.parquet")
    info = {"dataset": "synthetic-large", "default_template": TEMPLATE, "text_fields": ["title", "category", "brand"]}
    (d / "dataset.json").write_text(json.dumps(info))


def vector_chunks(n: int, chunk: int, clusters: int = 20_000, seed: int = 0):
    """Unit vectors [n, 384] in row chunks: mixture of ``clusters`` Gaussians with Zipf-sized clusters."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, DIM)).astype(np.float32)
    weights = 1.0 / np.arange(1, clusters + 1) ** 0.8
    weights /= weights.sum()
    for start in range(0, n, chunk):
        r = np.random.default_rng([seed, start])
        m = min(chunk, n - start)
        x = centres[r.choice(clusters, size=m, p=weights)] + 0.7 * r.normal(size=(m, DIM)).astype(np.float32)
        yield (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def interaction_log(n_items: int, n_users: int, max_len: int = 20, seed: int = 0):
    """Long-tailed log: per user 5..60 interactions (geometric), items Zipf(1.1) over a random item
    permutation; returns (user offsets, items) of the whole log."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(5 + rng.geometric(1 / 15, n_users), 60)
    perm = rng.permutation(n_items)
    ranks = rng.zipf(1.1, int(lengths.sum()))
    ranks = np.where(ranks <= n_items, ranks, rng.integers(1, n_items + 1, ranks.size))  # the far tail: uniform
    items = perm[ranks - 1].astype(np.int32)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    return offsets, items


# --------------------------------------------------------------------------- steps (each in a child process)


def overrides(args, *extra: str) -> list[str]:
    """params.yaml overrides of every step (``-S`` of the ``genrec`` command)."""
    over = [
        f"tokenizer.epochs={args.rqvae_epochs}",
        "tokenizer.keep_last=1",
        f"tokenizer.kmeans_iters={args.kmeans_iters}",
        "tokenizer.device=cpu",
        "embed.device=cpu",
        "recommender.device=cpu",
    ]
    if args.rqvae_batch_size:
        over.append(f"tokenizer.batch_size={args.rqvae_batch_size}")
    return [*over, *extra]


def load(args):
    from genrec_core.config import load_params

    return load_params(ROOT / "params.yaml", overrides(args))


def run_stage(module: str, args, root: Path, *extra: str) -> None:
    """The stage exactly as ``genrec <stage> --root ROOT -S ...`` runs it (params.yaml + overrides, seeded)."""
    from genrec_core.cli import _run_stage

    _run_stage(module, ROOT / "params.yaml", overrides(args, *extra), root)


def step_baseline(args, work: Path) -> dict:
    import importlib

    import polars  # noqa: F401
    import sentence_transformers  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    for module in (
        "genrec_core.cli",
        "genrec_core.embed.encoders",
        "genrec_core.tokenizers.training",
        "genrec_core.recommender.decoder_only",
        "genrec_core.recommender.beam_search",
    ):
        importlib.import_module(module)
    return {"items": 0, "note": "imports only (torch, transformers, sentence-transformers, the pipeline's modules): every step's floor"}


def step_texts(args, work: Path) -> dict:
    from genrec_core.embed.text import render_texts

    t0 = time.perf_counter()
    items = synthetic_items(args.items)
    t1 = time.perf_counter()
    texts = render_texts(items, TEMPLATE)
    return {"items": len(texts), "seconds": time.perf_counter() - t1, "note": f"make items {t1 - t0:.1f} s; e.g. {texts[0]!r}"}


def step_embed(args, work: Path, n: int) -> dict:
    from genrec_core.embed import stream

    root = work / f"embed_{n}"
    shutil.rmtree(root, ignore_errors=True)
    write_processed(root, n)
    stream.CHUNK_ITEMS = args.embed_chunk
    t0 = time.perf_counter()
    run_stage("embed", args, root)
    seconds = time.perf_counter() - t0
    report = json.loads((root / "reports" / "embed.json").read_text())
    import pyarrow.parquet as pq

    groups = pq.ParquetFile(root / "data" / "embeddings" / "item_vectors.parquet").metadata.num_row_groups
    rate = n / report["encode_seconds"]
    return {
        "items": n,
        "seconds": seconds,
        "rate": n / seconds,
        "note": (
            f"encode {report['encode_seconds']:.0f} s ({rate:.0f} items/s); {groups} row groups of <= {args.embed_chunk}; 1M projected: "
            f"{1e6 / rate / 3600:.1f} h"
        ),
        "encode_rate": rate,
    }


def vectors_root(work: Path) -> Path:
    return work / "vectors"


def step_vectors(args, work: Path) -> dict:
    from genrec_core.embed.stream import write_vectors
    from genrec_core.paths import ArtifactPaths

    paths = ArtifactPaths(vectors_root(work))
    t0 = time.perf_counter()
    write_vectors(vector_chunks(args.items, 65536), paths.embeddings, args.items)
    size = paths.embeddings.stat().st_size / 2**30
    return {"items": args.items, "seconds": time.perf_counter() - t0, "note": f"{size:.2f} GiB Parquet, 20,000 Zipf-sized clusters"}


def step_log(args, work: Path) -> dict:
    t0 = time.perf_counter()
    offsets, items = interaction_log(args.items, args.log_users)
    np.savez(work / "log.npz", offsets=offsets, items=items)
    counts = np.bincount(items, minlength=args.items)
    top = np.sort(counts)[::-1]
    share = top[: max(1, args.items // 100)].sum() / items.size
    return {
        "items": args.items,
        "seconds": time.perf_counter() - t0,
        "note": f"{args.log_users:,} users, {items.size:,} interactions; top 1% of items: {share:.0%} of them; {(counts > 0).mean():.0%} of items seen",
    }


def tokenizer_root(work: Path, kind: str) -> Path:
    root = work / kind
    emb = root / "data" / "embeddings"
    emb.mkdir(parents=True, exist_ok=True)
    link = emb / "item_vectors.parquet"
    if not link.exists():
        link.symlink_to((vectors_root(work) / "data" / "embeddings" / "item_vectors.parquet").resolve())
    return root


def step_tokenizer(args, work: Path, kind: str) -> dict:
    import polars as pl

    params = load(args)
    root = tokenizer_root(work, kind)
    t0 = time.perf_counter()
    run_stage("train_tokenizer", args, root, f"tokenizer.kind={kind}")
    seconds = time.perf_counter() - t0
    hist = pl.read_csv(root / "reports" / "tokenizer" / "history.csv")
    metrics = json.loads((root / "reports" / "tokenizer" / "metrics.json").read_text())
    k = metrics["codebook_size"]
    if kind == "rqvae":
        per = hist["seconds"].mean()
        note = (
            f"{len(hist)} epochs, {per:.0f} s/epoch (train {hist['train_seconds'].mean():.0f} s), batch {params.tokenizer.batch_size}; K={k}; raw "
            f"collision rate {metrics['collision_rate']:.3f}"
        )
    else:
        from genrec_core.tokenizers.spec import resolved_kind_params

        note = (
            f"{resolved_kind_params(params.tokenizer)['kmeans_iters']} Lloyd iterations per level (+ k-means++); K={k}; raw collision rate "
            f"{metrics['collision_rate']:.3f}"
        )
    return {"items": metrics["items"], "seconds": seconds, "note": note}


def step_emit(args, work: Path, kind: str) -> dict:
    root = tokenizer_root(work, kind)
    t0 = time.perf_counter()
    run_stage("emit_ids", args, root, f"ids.collision={args.collision}")
    seconds = time.perf_counter() - t0
    report = json.loads((root / "reports" / "ids" / "emit.json").read_text())
    ((name, st),) = report["per_tokenizer"].items()
    note = (
        f"{report['collision']}: {st['colliding_groups']:,} colliding groups (largest {st['max_group_size']}), {st['items_moved']:,} items moved, ID "
        f"length {st['id_length']}"
    )
    return {"items": report["n_items"], "seconds": seconds, "note": note}


def _item_tokens(work: Path, kind: str = "rqvae"):
    import torch

    from genrec_core.paths import ArtifactPaths
    from genrec_core.recommender.vocab import SemanticIdVocab
    from genrec_core.tokenizers.id_table import read_id_table_with_items

    _, tables = read_id_table_with_items(ArtifactPaths(work / kind).id_table)
    codes = tables[list(tables)[-1]]
    vocab = SemanticIdVocab.from_codes([codes])
    return vocab, torch.from_numpy(vocab.codes_to_tokens(codes))


def step_trie(args, work: Path) -> dict:
    from genrec_core.recommender.trie import ItemTrie

    vocab, tokens = _item_tokens(work, args.ids_from)
    t0 = time.perf_counter()
    trie = ItemTrie.build(tokens, vocab.size)
    seconds = time.perf_counter() - t0
    mib = (
        sum(
            getattr(trie, k).numel() * getattr(trie, k).element_size()
            for k in ("level_start", "node_token", "child_start", "child_count", "edge_keys", "leaf_item")
        )
        / 2**20
    )
    check = min(trie.num_items, 1000)
    assert bool(trie.lookup(tokens[:check]).eq(__import__("torch").arange(check)).all()), "trie lookup does not give back the items"
    return {
        "items": trie.num_items,
        "seconds": seconds,
        "rate": trie.num_items / seconds,
        "note": f"{trie.num_nodes:,} nodes, {mib:.0f} MiB of trie tensors; widest node per level {trie.max_children}",
    }


def step_beam(args, work: Path) -> dict:
    import dataclasses

    import torch

    from genrec_core.recommender.data import ExampleArrays, SequenceEncoder
    from genrec_core.recommender.interface import rank_examples
    from genrec_core.recommender.model import build_generative_model
    from genrec_core.training import resolve_item_embedding

    params = load(args)
    rp, _ = resolve_item_embedding(params.recommender)
    rp = dataclasses.replace(rp, dropout=0.0) if rp.dropout == "auto" else rp  # ranking only: dropout is off in eval mode anyway
    vocab, tokens = _item_tokens(work, args.ids_from)
    log = np.load(work / "log.npz")
    offsets, items = log["offsets"], log["items"]
    u = min(args.users, offsets.size - 1)
    # each user's last item is the target, the max_items before it the history (the leave-one-out test split)
    starts = np.maximum(offsets[:u], offsets[1 : u + 1] - 1 - params.data.max_items)
    ends = offsets[1 : u + 1] - 1
    lengths = ends - starts
    history = np.concatenate([items[s:e] for s, e in zip(starts, ends)]).astype(np.int32)
    examples = ExampleArrays(np.arange(u, dtype=np.int32), np.r_[0, np.cumsum(lengths)].astype(np.int64), history, items[ends].astype(np.int32))
    torch.manual_seed(params.seed)
    t0 = time.perf_counter()
    model = build_generative_model(rp, vocab, tokens).eval()  # builds the 1M-item trie (set_items)
    build_seconds = time.perf_counter() - t0
    encoder = SequenceEncoder.for_recommender(tokens, rp, vocab)
    beam, bs = params.evaluate.beam_size, params.evaluate.batch_size
    t0 = time.perf_counter()
    got, _ = rank_examples(model, examples, encoder.collate, beam, bs, progress=True)
    seconds = time.perf_counter() - t0
    assert got.shape == (u, beam) and (got >= 0).all()
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "items": u,
        "seconds": seconds,
        "rate": u / seconds,
        "unit": "users/s",
        "note": (
            f"{rp.model} ({n_params / 1e6:.1f} M params, random init; model + trie built in {build_seconds:.1f} s), beam {beam}, batch {bs}, vocab {vocab.size}"
        ),
    }


def run_step(name: str, args) -> dict:
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(args.threads)
    if name == "baseline":
        out = step_baseline(args, work)
    elif name == "texts":
        out = step_texts(args, work)
    elif name.startswith("embed-"):
        out = step_embed(args, work, int(name.split("-", 1)[1]))
    elif name == "vectors":
        out = step_vectors(args, work)
    elif name == "log":
        out = step_log(args, work)
    elif name in ("rqvae", "rqkmeans"):
        out = step_tokenizer(args, work, name)
    elif name.startswith("emit-"):
        out = step_emit(args, work, name.split("-", 1)[1])
    elif name == "trie":
        out = step_trie(args, work)
    elif name == "beam":
        out = step_beam(args, work)
    else:
        raise SystemExit(f"unknown step {name}")
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return out


# --------------------------------------------------------------------------- parent


def child(name: str, argv: list[str], limit_gib: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", name, *argv]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    killed = {"rss": 0.0}

    def watch() -> None:
        while proc.poll() is None:
            rss = rss_gib(proc.pid)
            if rss > limit_gib:
                killed["rss"] = rss
                proc.kill()
                return
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    result = None
    for line in out.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
    if result is None:
        why = f"killed at {killed['rss']:.1f} GiB RSS (limit {limit_gib})" if killed["rss"] else f"exit code {proc.returncode}"
        return {"step": name, "failed": why, "wall": wall}
    result.update(step=name, wall=wall)
    return result


def fmt_table(rows: list[dict]) -> str:
    head = f"| {'step':<14} | {'items/users':>11} | {'seconds':>8} | {'rate':>16} | {'peak RSS GiB':>12} | notes |"
    lines = [head, "|" + "|".join("-" * (len(c) + 0) for c in head.split("|")[1:-1]) + "|"]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['step']:<14} | {'':>11} | {r['wall']:>8.0f} | {'':>16} | {'':>12} | FAILED: {r['failed']} |")
            continue
        rate = f"{r['rate']:,.0f} {r.get('unit', 'items/s')}" if r.get("rate") else ""
        secs = f"{r['seconds']:.1f}" if "seconds" in r else ""
        lines.append(f"| {r['step']:<14} | {r['items']:>11,} | {secs:>8} | {rate:>16} | {r['peak_rss_gib']:>12.2f} | {r.get('note', '')} |")
    return "\n".join(lines)


def machine_line(threads: int) -> str:
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM; torch {torch.__version__}, {threads} thread(s) per step; Python {platform.python_version()}"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--embed-items", type=int, nargs="*", default=[10_000, 30_000], help="sample sizes for the real (MiniLM) embed stage")
    ap.add_argument("--embed-chunk", type=int, default=4096, help="the embed stage's CHUNK_ITEMS for the samples (default stage value 65536)")
    ap.add_argument("--rqvae-epochs", type=int, default=2)
    ap.add_argument("--rqvae-batch-size", type=int, default=0, help="0: params.yaml's tokenizer.batch_size")
    ap.add_argument("--kmeans-iters", type=int, default=5)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--log-users", type=int, default=100_000)
    ap.add_argument("--collision", default="reassign_last", choices=["reassign_last", "dedup_level"], help="ids.collision of the emit steps")
    ap.add_argument("--ids-from", default="rqvae", choices=["rqvae", "rqkmeans"], help="ID table the trie and beam steps use")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", nargs="*", default=None, help="default: all")
    ap.add_argument("--workdir", default="/tmp/large_catalogue")
    ap.add_argument("--rss-limit-gib", type=float, default=16.0)
    ap.add_argument("--out", default=None, help="write the markdown report here")
    ap.add_argument("--json", default=None, help="write the raw rows here")
    ap.add_argument("--step", default=None, help=argparse.SUPPRESS)
    return ap


def main() -> None:
    args = parser().parse_args()

    if args.step:
        print("RESULT " + json.dumps(run_step(args.step, args)), flush=True)
        return

    steps = args.steps or [
        "baseline",
        "texts",
        *[f"embed-{n}" for n in args.embed_items],
        "vectors",
        "log",
        "rqvae",
        "rqkmeans",
        "emit-rqvae",
        "emit-rqkmeans",
        "trie",
        "beam",
    ]
    argv = [a for a in sys.argv[1:]]
    rows = []
    t_all = time.perf_counter()
    for name in steps:
        print(f"== {name}", file=sys.stderr, flush=True)
        r = child(name, argv, args.rss_limit_gib)
        rows.append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)
    table = fmt_table(rows)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    if args.out:
        cmd = "python benchmarks/large_catalogue.py " + " ".join(sys.argv[1:])
        text = "\n".join(
            [
                "# Large catalogue: the pipeline at 1M items",
                "",
                f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {machine_line(args.threads)}; total "
                f"{time.perf_counter() - t_all:.0f} s.",
                "",
                f"Command: `{cmd}`",
                "",
                table,
                "",
            ]
        )
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
