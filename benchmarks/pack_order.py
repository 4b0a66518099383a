"""Packed training batches in random against length order (``recommender.pack_order``), on real data.

Usage (a project root whose data/processed and data/ids are built, e.g. a reproduction upstream):

    OMP_NUM_THREADS=1 python benchmarks/pack_order.py --root /work/repro/beauty/upstream --sample 40 --repeats 2 \\
        --out reports/benchmarks/pack_order

For each order: the padding share of a packed epoch (exact, every batch of epoch 0:
``PackedBatchSampler.padding_share``), and the seconds of ``collate`` + ``train_step`` of the
default decoder-only model (params.yaml's recommender section) on ``--sample`` batches drawn
uniformly (seeded) from epoch 0's batches, timed in alternation (random, length, random, ...) so
load from other jobs falls on both; the epoch estimate is the mean step time x batches per epoch.
Timings compare only within one run of this script.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.runs import machine_line  # noqa: E402
from benchmarks.train_step_speed import default_params, model_trainer  # noqa: E402
from genrec_core.recommender.data import load_examples  # noqa: E402
from genrec_core.recommender.vocab import SemanticIdVocab  # noqa: E402
from genrec_core.tokenizers.id_table import read_id_table_with_items  # noqa: E402

ORDERS = ("random", "length")


def load(root: Path) -> tuple[SemanticIdVocab, torch.Tensor, object]:
    _, tables = read_id_table_with_items(root / "data" / "ids" / "item_ids.parquet")
    codes = tables[list(tables)[-1]]
    vocab = SemanticIdVocab.from_codes([codes])
    tokens = torch.from_numpy(vocab.codes_to_tokens(codes))
    return vocab, tokens, load_examples(root / "data" / "processed" / "train.parquet", int(codes.shape[0]))


def time_steps(trainer, batches: list[np.ndarray]) -> list[float]:
    out = []
    for index in batches:
        t0 = time.perf_counter()
        trainer.train_step(trainer.method.collate(trainer, trainer.train_examples, index, None))
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--sample", type=int, default=40, help="timed batches per order and repeat")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", "1")))
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    vocab, tokens, examples = load(args.root)
    base = default_params(args.params)
    rows, padding, n_batches, positions = {o: [] for o in ORDERS}, {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {}
        for order in ORDERS:
            trainers[order] = model_trainer(
                "decoder_only", dataclasses.replace(base, pack_order=order), vocab, tokens, examples, f"{tmp}/{order}", base.batch_size
            )
            s = trainers[order].sampler
            epoch = s.batches(0)
            padding[order], n_batches[order] = s.padding_share(epoch), len(epoch)
            pick = np.random.default_rng(0).choice(len(epoch), size=min(args.sample * args.repeats + args.warmup, len(epoch)), replace=False)
            positions[order] = [epoch[i] for i in pick]
        for order in ORDERS:
            time_steps(trainers[order], positions[order][: args.warmup])
        for r in range(args.repeats):
            for order in ORDERS:
                part = positions[order][args.warmup + r * args.sample : args.warmup + (r + 1) * args.sample]
                rows[order] += time_steps(trainers[order], part)
    base_epoch = np.mean(rows["random"]) * n_batches["random"]
    lines = [
        "# Packed batches: random against length order (`recommender.pack_order`)",
        "",
        f"Command: `{' '.join(['python', *[a if ' ' not in a else repr(a) for a in sys.argv]])}`",
        "",
        machine_line(torch.get_num_threads(), 1) + f" `uptime` at the start: `{uptime}`; data: `{args.root}` ({len(examples):,} training examples).",
        "",
        "Default decoder-only model (params.yaml's recommender section, only `pack_order` changed); timed: `collate` + `train_step` "
        f"of {args.sample} x {args.repeats} batches drawn uniformly (seed 0) from epoch 0's batches, the two orders alternating; "
        "epoch estimate = mean seconds per step x batches per epoch. Padding: share of the packed positions that are padding, over all of epoch 0.",
        "",
        "| order | batches / epoch | padding | mean s / step | epoch estimate (s) | speed-up |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for order in ORDERS:
        epoch_s = np.mean(rows[order]) * n_batches[order]
        lines.append(
            f"| {order} | {n_batches[order]} | {100 * padding[order]:.0f}% | {np.mean(rows[order]):.3f} | {epoch_s:.0f} | {base_epoch / epoch_s:.2f}x |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(f"{args.out}.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
