"""Optimiser steps per second of the recommender's training step on synthetic ml-100k-like shapes.

Usage: python benchmarks/train_step_speed.py [--batch 256 --history 20 --levels 3 --layers 2 --steps 20]
Times ``Trainer.train_step`` (forward, ce loss, backward, clipping, AdamW, scheduler) on full
20-item histories (the common case after the history window), for both encoder inputs.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import polars as pl
import torch

from genrec_core.config import RecommenderParams
from genrec_core.recommender.data import SequenceEncoder, examples_from_frame
from genrec_core.recommender.losses import LossContext, build_loss
from genrec_core.recommender.model import GenerativeRecommender
from genrec_core.recommender.trainer import Trainer
from genrec_core.recommender.vocab import SemanticIdVocab


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--history", type=int, default=20)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--codebook", type=int, default=256)
    ap.add_argument("--items", type=int, default=1349)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    codes = np.stack([rng.permutation(args.codebook * 8)[: args.items] % args.codebook for _ in range(args.levels - 1)] + [np.arange(args.items) % args.codebook], 1)
    codes[:, 0] = np.arange(args.items) // args.codebook  # unique IDs
    vocab = SemanticIdVocab.from_codes([codes])
    tokens = torch.from_numpy(vocab.codes_to_tokens(codes))
    n = args.batch * (args.steps + args.warmup)
    df = pl.DataFrame(
        {"user_id": np.arange(n, dtype=np.int32), "history": rng.integers(0, args.items, size=(n, args.history)).astype(np.int32).tolist(), "target": rng.integers(0, args.items, size=n).astype(np.int32)},
        schema={"user_id": pl.Int32, "history": pl.List(pl.Int32), "target": pl.Int32},
    )
    examples = examples_from_frame(df)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, batch {args.batch}, history {args.history}, L {args.levels}")
    for mode in ("tokens", "items"):
        params = RecommenderParams(encoder_input=mode, num_layers=args.layers, num_decoder_layers=args.layers, d_model=args.d_model, batch_size=args.batch, epochs=1, warmup_steps=10)
        torch.manual_seed(0)
        model = GenerativeRecommender(params, vocab)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(model, params, SequenceEncoder(tokens, mode), examples, examples.subset(np.arange(8)), build_loss("ce", {}, LossContext(vocab, tokens)),
                              checkpoint_dir=tmp, reports_dir=tmp, seed=0, fingerprint="bench", device=args.device, progress=False, use_dvclive=False)
            batches = list(trainer.sampler)
            times = []
            for i, index in enumerate(batches):
                t0 = time.perf_counter()
                batch = trainer.encoder.collate(examples, index).to(trainer.device)
                trainer.train_step(batch)
                if trainer.device.startswith("cuda"):
                    torch.cuda.synchronize()
                if i >= args.warmup:
                    times.append(time.perf_counter() - t0)
        sec = float(np.median(times))
        print(f"{mode:6s}: input {tuple(batch.input_ids.shape)}, median {sec * 1000:.0f} ms/step, {1 / sec:.2f} steps/s, {args.batch / sec:.0f} examples/s")


if __name__ == "__main__":
    main()
