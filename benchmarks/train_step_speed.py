"""Throughput of the recommender's training step: samples/s and share of the machine's peak FLOP/s.

Usage:
    python benchmarks/train_step_speed.py [--threads 1,2] [--steps 20] [--out reports/benchmarks/train_step_speed]

Times ``Trainer.train_step`` (collate, forward, loss, backward, clipping, optimiser, scheduler) on
synthetic ml-100k-like shapes (full 20-item histories, 3-level IDs, the CPU default model) for a
ladder of variants, each adding one change to the one before:

- ``before``: the step as it was (dropout 0.1, AdamW's for-each loop, full-vocabulary softmax);
- ``+fused``: AdamW's fused kernel;
- ``+level_softmax``: the softmax of each decoding step over its level's codes only;
- ``+dropout0``: no dropout (on a CPU, drawing dropout masks costs more than the matmuls);
- ``+compile``: ``torch.compile`` of the model (compilation time reported apart), when it works.

FLOPs per step are counted once with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls of the
forward and backward pass); the peak is the best of a few float32 2048x2048 matmuls at the same
thread count. MFU = FLOPs per step / seconds per step / peak. Timings compare only within one
run of this script (machines of this kind differ about 2x).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch.utils.flop_counter import FlopCounterMode

from genrec_core.config import RecommenderParams
from genrec_core.methods import MethodContext, build_method
from genrec_core.recommender.data import SequenceEncoder, examples_from_frame
from genrec_core.recommender.losses import LossContext, build_loss
from genrec_core.recommender.model import GenerativeRecommender
from genrec_core.recommender.trainer import Trainer
from genrec_core.recommender.vocab import SemanticIdVocab

VARIANTS = ("before", "+fused", "+level_softmax", "+dropout0", "+compile")


def peak_flops(n: int = 2048, repeats: int = 5) -> float:
    """Best float32 matmul FLOP/s at the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def synthetic(args) -> tuple[SemanticIdVocab, torch.Tensor, object]:
    rng = np.random.default_rng(0)
    k = args.codebook
    codes = np.stack([np.arange(args.items) // (k * k) % k, np.arange(args.items) // k % k, np.arange(args.items) % k], 1)[:, : args.levels]
    vocab = SemanticIdVocab(tuple([k] * args.levels))
    tokens = torch.from_numpy(vocab.codes_to_tokens(codes))
    n = args.batch * (args.steps + args.warmup)
    df = pl.DataFrame(
        {"user_id": np.arange(n, dtype=np.int32), "history": rng.integers(0, args.items, size=(n, args.history)).astype(np.int32).tolist(), "target": rng.integers(0, args.items, size=n).astype(np.int32)},
        schema={"user_id": pl.Int32, "history": pl.List(pl.Int32), "target": pl.Int32},
    )
    return vocab, tokens, examples_from_frame(df)


def variant_params(name: str, args) -> tuple[RecommenderParams, bool, bool]:
    """(params, fused AdamW, compile) of a variant: each adds one change to the previous one."""
    upto = VARIANTS.index(name)
    params = RecommenderParams(
        encoder_input="items", num_layers=args.layers, num_decoder_layers=args.layers, d_model=args.d_model, batch_size=args.batch, epochs=1, warmup_steps=10,
        dropout=0.0 if upto >= VARIANTS.index("+dropout0") else 0.1, level_softmax=upto >= VARIANTS.index("+level_softmax"),
    )
    return params, upto >= VARIANTS.index("+fused"), upto >= VARIANTS.index("+compile")


def time_variant(name: str, args, vocab, tokens, examples, tmp: str) -> dict:
    params, fused, compile_model = variant_params(name, args)
    torch.manual_seed(0)
    model = GenerativeRecommender(params, vocab)
    method = build_method("tiger", {}, MethodContext(SequenceEncoder(tokens, "items"), build_loss("ce", {}, LossContext(vocab, tokens))))
    trainer = Trainer(model, params, method, examples, examples.subset(np.arange(8)),
                      checkpoint_dir=tmp, reports_dir=tmp, seed=0, fingerprint="bench", device="cpu", progress=False, use_dvclive=False)
    if not fused:  # the step as it was: AdamW's for-each implementation
        method.optimizer = torch.optim.AdamW(method.optimizer.param_groups[0]["params"], lr=params.lr, weight_decay=params.weight_decay, foreach=True)
        method.scheduler = torch.optim.lr_scheduler.LambdaLR(method.optimizer, lambda s: 1.0)
    compile_s = 0.0
    if compile_model:
        trainer.train_model = torch.compile(model)
    batches = list(trainer.sampler)
    flops = 0
    times = []
    for i, index in enumerate(batches):
        t0 = time.perf_counter()
        batch = method.encoder.collate(examples, index)
        if i == 0 and not compile_model:
            with FlopCounterMode(display=False) as counter:
                trainer.train_step(batch)
            flops = counter.get_total_flops()
        else:
            trainer.train_step(batch)
        dt = time.perf_counter() - t0
        if i == 0 and compile_model:
            compile_s = dt
        if i >= args.warmup:
            times.append(dt)
    return {"seconds": float(np.median(times)), "flops": flops, "compile_s": compile_s}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--history", type=int, default=20)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--codebook", type=int, default=64)
    ap.add_argument("--items", type=int, default=1349)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", default=None, help="write <out>.md as well as printing the table")
    args = ap.parse_args()

    vocab, tokens, examples = synthetic(args)
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        peak = peak_flops()
        flops_by_name: dict[str, int] = {}
        for name in args.variants.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    r = time_variant(name, args, vocab, tokens, examples, tmp)
                except Exception as exc:  # torch.compile needs a working C++ toolchain
                    print(f"{name} at {threads} threads failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                    continue
            # compile does not change the arithmetic: count it as the variant before it
            flops = r["flops"] or flops_by_name.get(VARIANTS[VARIANTS.index(name) - 1], 0)
            flops_by_name[name] = flops
            rows.append({"threads": threads, "variant": name, "ms/step": r["seconds"] * 1000, "samples/s": args.batch / r["seconds"], "GFLOP/step": flops / 1e9,
                         "GFLOP/s": flops / r["seconds"] / 1e9, "peak GFLOP/s": peak / 1e9, "MFU": flops / r["seconds"] / peak, "compile s": r["compile_s"]})
            print(rows[-1], flush=True)
    header = "| threads | variant | ms/step | samples/s | speed-up | GFLOP/step | GFLOP/s | peak GFLOP/s | MFU | compile s |"
    lines = [header, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        base = next(x for x in rows if x["threads"] == r["threads"])
        lines.append(f"| {r['threads']} | {r['variant']} | {r['ms/step']:.0f} | {r['samples/s']:.0f} | {base['ms/step'] / r['ms/step']:.2f}x | {r['GFLOP/step']:.2f} | {r['GFLOP/s']:.1f} | {r['peak GFLOP/s']:.1f} | {r['MFU']:.1%} | {r['compile s']:.1f} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")), platform.processor())
        text = (
            "# Training-step throughput (CPU)\n\n"
            f"Command: `python benchmarks/train_step_speed.py {' '.join(sys.argv[1:])}`\n\n"
            f"Machine: {cpu}, {torch.get_num_threads()} threads max, torch {torch.__version__}; {datetime.date.today()}. "
            f"Shapes: batch {args.batch}, full {args.history}-item histories, {args.levels}x{args.codebook} IDs, {args.layers}+{args.layers} layers, d_model {args.d_model}, `encoder_input: items`. "
            "Each variant adds one change to the row above it; speed-up is against `before` at the same thread count. "
            "FLOPs: matmuls of forward and backward (FlopCounterMode); peak: best float32 2048x2048 matmul at that thread count. "
            "Timings compare only within one run of this script.\n\n" + table + "\n"
        )
        Path(args.out).with_suffix(".md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
