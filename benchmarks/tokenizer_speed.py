"""Tokenizer speed on Yelp-sized data: RQ-VAE seconds per epoch (full batch and mini-batch) and
ID-assignment throughput, plus PQ, on the CPU and (when available) CUDA.

Uses the real item vectors at <root>/data/embeddings/item_vectors.parquet when the processed
dataset there is Yelp; otherwise seeded synthetic clustered vectors of Yelp's size (20,033 items
x 384 dims, L2-normalised like MiniLM output). The output says which.

    python benchmarks/tokenizer_speed.py [--root .] [--epochs 4] [--batch-size 1024] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genrec_core.config import TokenizerParams  # noqa: E402
from genrec_core.paths import ArtifactPaths  # noqa: E402
from genrec_core.tokenizers.training import load_kept_tokenizers, train_pq, train_rqvae  # noqa: E402

YELP_ITEMS, DIM = 20_033, 384


def synthetic(n: int = YELP_ITEMS, d: int = DIM, clusters: int = 1000, seed: int = 0) -> np.ndarray:
    """Clustered unit vectors: cluster centres + noise of similar norm, like sentence embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(0, clusters, n)] + 0.7 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def load_data(root: Path) -> tuple[np.ndarray, str]:
    paths = ArtifactPaths(root)
    info = paths.dataset_info
    if paths.embeddings.exists() and info.exists() and json.loads(info.read_text()).get("dataset") == "yelp":
        v = pl.read_parquet(paths.embeddings)["vector"].to_numpy().astype(np.float32)
        return v, f"real Yelp item vectors ({paths.embeddings}, {v.shape[0]} x {v.shape[1]})"
    return synthetic(), f"SYNTHETIC clustered vectors ({YELP_ITEMS} x {DIM}, seed 0): no Yelp embeddings under {root}"


def throughput(tok, x: np.ndarray, repeats: int = 3) -> float:
    tok.quantize(x)  # warm-up (allocator, kernels)
    best = min(_timed(lambda: tok.quantize(x)) for _ in range(repeats))
    return x.shape[0] / best


def _timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t


def bench(x: np.ndarray, device: str, epochs: int, batch_size: int) -> list[dict]:
    rows = []
    for levels in (3, 4):
        for bs in (0, batch_size):
            tp = TokenizerParams(levels=levels, codebook_size=256, optimizer="adamw", lr=1e-3, epochs=epochs, keep_last=1, batch_size=bs, device=device)
            with tempfile.TemporaryDirectory() as tmp:
                s = train_rqvae(x, tp, 0, Path(tmp) / "tok", Path(tmp) / "rep", progress=False)
                h = pl.read_csv(Path(tmp) / "rep" / "history.csv")
                tok = load_kept_tokenizers(Path(tmp) / "tok", device=device)[-1][1]
                ips = throughput(tok, x)
            later = h["seconds"].to_list()[1:] or h["seconds"].to_list()
            rows.append(
                {
                    "device": device,
                    "kind": "rqvae",
                    "L": levels,
                    "batch": "full" if bs == 0 else str(bs),
                    "epoch1_s": h["seconds"][0],
                    "s_per_epoch": statistics.median(later),
                    "train_s_per_epoch": statistics.median(h["train_seconds"].to_list()[1:] or h["train_seconds"].to_list()),
                    "assign_items_per_s": ips,
                    "usage_l1": s["usage_share"]["l1"],
                    "collision_rate": s["collision_rate"],
                }
            )
        tp = TokenizerParams(kind="pq", levels=levels, codebook_size=256, kind_params={"kmeans_iters": 50}, device=device)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            s = train_pq(x, tp, 0, Path(tmp) / "tok", Path(tmp) / "rep")
            fit = time.perf_counter() - t
            ips = throughput(load_kept_tokenizers(Path(tmp) / "tok", device=device)[-1][1], x)
        rows.append(
            {
                "device": device,
                "kind": "pq",
                "L": levels,
                "batch": "-",
                "epoch1_s": fit,
                "s_per_epoch": float("nan"),
                "train_s_per_epoch": float("nan"),
                "assign_items_per_s": ips,
                "usage_l1": s["usage_share"]["l1"],
                "collision_rate": s["collision_rate"],
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=".", type=Path)
    ap.add_argument("--epochs", default=4, type=int, help="epochs per timed run (the first includes k-means init)")
    ap.add_argument("--batch-size", default=1024, type=int, help="the mini-batch setting timed besides full batch")
    ap.add_argument("--out", type=Path, help="also write the table (markdown) here")
    args = ap.parse_args()

    x, source = load_data(args.root)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = [r for dev in devices for r in bench(x, dev, args.epochs, args.batch_size)]
    header = (
        f"data: {source}\nK=256, latent 32, hidden [512,256,128], adamw lr 1e-3, {args.epochs} epochs per run; "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {os.cpu_count()} cores, {platform.processor() or platform.machine()}; "
        f"load average {os.getloadavg()[0]:.1f}\n"
        "epoch1_s: first epoch incl. k-means init of the codebooks (RQ-VAE) / whole fit (PQ, 50 k-means iterations); "
        "s_per_epoch: median of later epochs incl. metrics pass and checkpoint; train_s_per_epoch: optimisation only; "
        "assign_items_per_s: quantize() of all items, best of 3\n"
    )
    table = pl.DataFrame(rows)
    with pl.Config(
        tbl_rows=-1,
        tbl_cols=-1,
        tbl_width_chars=250,
        float_precision=3,
        tbl_formatting="MARKDOWN",
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
    ):
        text = header + str(table)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
