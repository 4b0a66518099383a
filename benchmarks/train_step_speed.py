"""Throughput of the recommender's training step: samples/s and share of the machine's peak FLOP/s.

Usage:
    python benchmarks/train_step_speed.py [--threads 1,2] [--steps 20] [--out reports/benchmarks/train_step_speed]
    python benchmarks/train_step_speed.py --data ml-100k,beauty   # Beauty: 12,101 items, 3x128 IDs, 9 items a user
    python benchmarks/train_step_speed.py --items 12101 --codebook-size 128 --user-items 9   # the same Beauty sizes by hand

Part 1, the models (``--models``; the project's recommender params from ``--params``, i.e. the
defaults of a run, with only ``model``/``encoder_input`` changed): ``decoder_only`` with packed
training (``pack_examples``: the CPU default), ``tiger_items`` and ``tiger_tokens`` (the T5 with
``encoder_input: items`` / ``tokens``). Synthetic ml-100k-like data (by default): 1,349 items with
random distinct 3x64 IDs, users of ``--user-items`` items each (ml-100k: 106 on average, Beauty:
8.9) whose training examples are the sliding windows the preprocess stage makes (up to 20-item
histories), batched by the trainer's own sampler (packed chunks of consecutive examples for the
decoder). Timed: ``Method.collate`` + ``Trainer.train_step`` (forward, loss, backward, clipping,
fused AdamW, scheduler), the median over ``--steps`` after ``--warmup``.

Part 2, the ladder (``--variants``, off unless asked) of the T5 items step as it was optimised, each
variant adding one change to the one before, on full 20-item histories:

- ``before``: the step as it was (dropout 0.1, AdamW's for-each loop, full-vocabulary softmax);
- ``+fused``: AdamW's fused kernel;
- ``+level_softmax``: the softmax of each decoding step over its level's codes only;
- ``+dropout0``: no dropout (on a CPU, drawing dropout masks costs more than the matmuls);
- ``+compile``: ``torch.compile`` of the model (compilation time reported apart), when it works.

samples/s = training examples per second (a packed sequence counts as the examples it holds).
FLOPs per step are counted by summing the shapes of the matmuls (and attention products) of the
forward and backward pass (``torch.utils.flop_counter.FlopCounterMode``, on 4 of the timed
batches in a pass after the timing; the ladder: on its first step), not as 6 x
params x tokens (which here would count the embedding table and miss attention); the peak is the best
of a few float32 2048x2048 matmuls at the same thread count. MFU = FLOPs per step / seconds per
step / peak. Timings compare only within one run of this script (machines of this kind differ
about 2x; other jobs on the machine slow it: the report says the load).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from genrec_core.config import RecommenderParams, load_params  # noqa: E402
from genrec_core.methods import MethodContext, build_method  # noqa: E402
from genrec_core.recommender.data import SequenceEncoder, examples_from_frame  # noqa: E402
from genrec_core.recommender.losses import LossContext, build_loss  # noqa: E402
from genrec_core.recommender.model import GenerativeRecommender, build_generative_model  # noqa: E402
from genrec_core.recommender.schedule import resolve_dropout  # noqa: E402
from genrec_core.recommender.trainer import Trainer  # noqa: E402
from genrec_core.recommender.vocab import SemanticIdVocab  # noqa: E402
from genrec_core.training import resolve_item_embedding  # noqa: E402

VARIANTS = ("before", "+fused", "+level_softmax", "+dropout0", "+compile")
#: --models: name -> (recommender.model, recommender.encoder_input)
MODELS = {"decoder_only": ("decoder_only", "items"), "tiger_items": ("tiger", "items"), "tiger_tokens": ("tiger", "tokens")}
#: --data presets: (items, codes per level, items per user); "custom" = --items, --codebook-size, --user-items
PRESETS = {"ml-100k": (1349, 64, 106), "beauty": (12101, 128, 9)}


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


def random_ids(items: int, levels: int, codebook: int, seed: int = 0) -> tuple[SemanticIdVocab, torch.Tensor]:
    """(vocab, [items, levels] token ids): random distinct codes, ``codebook`` per level (what
    ``ids.collision: reassign_last`` leaves: L tokens, every ID distinct)."""
    if codebook**levels < items:
        raise SystemExit(f"{levels} levels of {codebook} codes cannot give {items} distinct IDs")
    rng = np.random.default_rng(seed)
    codes = np.unique(rng.integers(0, codebook, size=(int(items * 1.3) + 64, levels)), axis=0)
    while codes.shape[0] < items:
        codes = np.unique(np.concatenate([codes, rng.integers(0, codebook, size=(items, levels))]), axis=0)
    codes = codes[rng.permutation(codes.shape[0])[:items]]
    vocab = SemanticIdVocab(tuple([codebook] * levels))
    return vocab, torch.from_numpy(vocab.codes_to_tokens(codes))


def sliding_examples(n_examples: int, items: int, user_items: int, history: int, seed: int = 0):
    """Training examples of users with ``user_items`` items each, as the preprocess stage makes
    them: target t = 1 .. user_items - 3 (the last two go to validation and test), history = up to
    ``history`` items before it; consecutive examples of a user are linked (packing)."""
    rng = np.random.default_rng(seed)
    per_user = max(1, user_items - 3)
    users = -(-n_examples // per_user)
    uid, hist, tgt = [], [], []
    for u in range(users):
        seq = rng.integers(0, items, size=user_items).tolist()
        for t in range(1, per_user + 1):
            uid.append(u)
            hist.append(seq[max(0, t - history) : t])
            tgt.append(seq[t])
    df = pl.DataFrame({"user_id": uid, "history": hist, "target": tgt}, schema={"user_id": pl.Int32, "history": pl.List(pl.Int32), "target": pl.Int32})
    return examples_from_frame(df)


def default_params(params_file: str | None) -> RecommenderParams:
    """The project's recommender params (params.yaml), or the dataclass defaults without one."""
    if params_file and Path(params_file).exists():
        return load_params(params_file).recommender
    return RecommenderParams()


def model_trainer(name: str, base: RecommenderParams, vocab, tokens, examples, tmp: str, batch: int, seed: int = 0) -> Trainer:
    """A trainer of model ``name`` (MODELS) with the project's params otherwise."""
    kind, encoder_input = MODELS[name]
    params = dataclasses.replace(base, model=kind, encoder_input=encoder_input, batch_size=batch, epochs=1, threads=0, device="cpu", max_eval_users=0)
    params, _ = resolve_item_embedding(params)
    params, _ = resolve_dropout(params)  # dropout auto on this 1-epoch schedule: 0 (Beauty's 20-epoch default would draw 0.1)
    params.validate()
    torch.manual_seed(seed)
    model = build_generative_model(params, vocab, tokens)
    method = build_method(
        "plain", {}, MethodContext(SequenceEncoder(tokens, encoder_input), build_loss(params.loss, params.loss_params, LossContext(vocab, tokens)))
    )
    return Trainer(
        model,
        params,
        method,
        examples,
        examples.subset(np.arange(8)),
        checkpoint_dir=tmp,
        reports_dir=tmp,
        seed=seed,
        fingerprint="bench",
        device="cpu",
        progress=False,
        use_dvclive=False,
    )


def time_trainer(trainer: Trainer, steps: int, warmup: int, flop_batches: int = 4) -> dict:
    """Median seconds of ``collate`` + ``train_step`` over ``steps`` batches after ``warmup``; the mean
    examples per timed step; FLOPs per step = the FLOPs per example of ``flop_batches`` of the timed
    batches (counted in a pass after the timing: the counter slows the step) x examples per step."""
    batches = list(trainer.sampler)[: steps + warmup]
    if len(batches) < steps + warmup:
        raise SystemExit(f"only {len(batches)} batches; raise the number of examples")
    times, sizes = [], []
    for i, index in enumerate(batches):
        t0 = time.perf_counter()
        batch = trainer.method.collate(trainer, trainer.train_examples, index, None)
        trainer.train_step(batch)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            sizes.append(len(index))
    flops = examples = 0
    for i in np.unique(np.linspace(warmup, len(batches) - 1, flop_batches).round().astype(int)):
        batch = trainer.method.collate(trainer, trainer.train_examples, batches[i], None)
        with FlopCounterMode(display=False) as counter:
            trainer.train_step(batch)
        flops += counter.get_total_flops()
        examples += len(batches[i])
    per_step = float(np.mean(sizes))
    return {"seconds": float(np.median(times)), "examples": per_step, "flops": flops / examples * per_step}


def synthetic(args) -> tuple[SemanticIdVocab, torch.Tensor, object]:
    """The ladder's data: one full ``--history``-item example per user."""
    rng = np.random.default_rng(0)
    vocab, tokens = random_ids(args.items, args.levels, args.codebook)
    n = args.batch * (args.steps + args.warmup)
    df = pl.DataFrame(
        {
            "user_id": np.arange(n, dtype=np.int32),
            "history": rng.integers(0, args.items, size=(n, args.history)).astype(np.int32).tolist(),
            "target": rng.integers(0, args.items, size=n).astype(np.int32),
        },
        schema={"user_id": pl.Int32, "history": pl.List(pl.Int32), "target": pl.Int32},
    )
    return vocab, tokens, examples_from_frame(df)


def variant_params(name: str, args) -> tuple[RecommenderParams, bool, bool]:
    """(params, fused AdamW, compile) of a variant: each adds one change to the previous one."""
    upto = VARIANTS.index(name)
    params = RecommenderParams(
        encoder_input="items",
        num_layers=args.layers,
        num_decoder_layers=args.layers,
        d_model=args.d_model,
        batch_size=args.batch,
        epochs=1,
        warmup_steps=10,
        dropout=0.0 if upto >= VARIANTS.index("+dropout0") else 0.1,
        level_softmax=upto >= VARIANTS.index("+level_softmax"),
    )
    return params, upto >= VARIANTS.index("+fused"), upto >= VARIANTS.index("+compile")


def time_variant(name: str, args, vocab, tokens, examples, tmp: str) -> dict:
    params, fused, compile_model = variant_params(name, args)
    torch.manual_seed(0)
    model = GenerativeRecommender(params, vocab)
    method = build_method("plain", {}, MethodContext(SequenceEncoder(tokens, "items"), build_loss("ce", {}, LossContext(vocab, tokens))))
    trainer = Trainer(
        model,
        params,
        method,
        examples,
        examples.subset(np.arange(8)),
        checkpoint_dir=tmp,
        reports_dir=tmp,
        seed=0,
        fingerprint="bench",
        device="cpu",
        progress=False,
        use_dvclive=False,
    )
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


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")), platform.processor())
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}; `uptime` at the start: `{load}`"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--history", type=int, default=20)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--codebook", "--codebook-size", dest="codebook", type=int, default=64)
    ap.add_argument("--items", type=int, default=1349)
    ap.add_argument("--user-items", type=int, default=106, help="items per synthetic user (ml-100k: 106 on average; Beauty: 9)")
    ap.add_argument("--params", default="params.yaml", help="the recommender params of part 1 (dataclass defaults when the file is missing)")
    ap.add_argument("--layers", type=int, default=2, help="the ladder's layers (part 1 uses --params)")
    ap.add_argument("--d-model", type=int, default=128, help="the ladder's d_model")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    ap.add_argument("--models", default=",".join(MODELS), help=f"part 1: comma-separated, of {', '.join(MODELS)}; empty: none")
    ap.add_argument("--variants", default="", help=f"part 2, the ladder: comma-separated, of {', '.join(VARIANTS)}; empty (default): none")
    ap.add_argument(
        "--data",
        default="custom",
        help=f"part 1: comma-separated data sizes, of {', '.join(PRESETS)} (items, codes per level, items per user) "
        "or custom (--items, --codebook-size, --user-items)",
    )
    ap.add_argument("--out", default=None, help="write <out>.md as well as printing the tables")
    args = ap.parse_args()
    machine_line = machine()
    print(machine_line)

    base = default_params(args.params)
    models = [m for m in args.models.split(",") if m]
    variants = [v for v in args.variants.split(",") if v]
    sizes = {}
    for name in args.data.split(","):
        if name != "custom" and name not in PRESETS:
            raise SystemExit(f"--data: unknown {name!r}; choose from {', '.join(PRESETS)}, custom")
        sizes[name] = PRESETS.get(name, (args.items, args.codebook, args.user_items))
    settings = {}  # data name -> (vocab, tokens, examples)
    if models:
        for name, (items, codebook, user_items) in sizes.items():
            vocab, tokens = random_ids(items, args.levels, codebook)
            settings[name] = (vocab, tokens, sliding_examples(args.batch * (args.steps + args.warmup) * 2, items, user_items, args.history))
    model_rows, rows = [], []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        peak = peak_flops()
        for data, (vocab, tokens, examples) in settings.items():
            for name in models:
                with tempfile.TemporaryDirectory() as tmp:
                    trainer = model_trainer(name, base, vocab, tokens, examples, tmp, args.batch)
                    r = time_trainer(trainer, args.steps, args.warmup)
                    params_count = sum(p.numel() for p in trainer.model.parameters())
                model_rows.append(
                    {
                        "threads": threads,
                        "data": data,
                        "model": name,
                        "ms/step": r["seconds"] * 1000,
                        "examples/step": r["examples"],
                        "samples/s": r["examples"] / r["seconds"],
                        "GFLOP/step": r["flops"] / 1e9,
                        "GFLOP/s": r["flops"] / r["seconds"] / 1e9,
                        "peak GFLOP/s": peak / 1e9,
                        "MFU": r["flops"] / r["seconds"] / peak,
                        "params": params_count,
                    }
                )
                print(model_rows[-1], flush=True)
        if variants:
            ladder_vocab, ladder_tokens, ladder_examples = synthetic(args)
        flops_by_name: dict[str, int] = {}
        for name in variants:
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    r = time_variant(name, args, ladder_vocab, ladder_tokens, ladder_examples, tmp)
                except Exception as exc:  # torch.compile needs a working C++ toolchain
                    print(f"{name} at {threads} threads failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                    continue
            # compile does not change the arithmetic: count it as the variant before it
            flops = r["flops"] or flops_by_name.get(VARIANTS[VARIANTS.index(name) - 1], 0)
            flops_by_name[name] = flops
            rows.append(
                {
                    "threads": threads,
                    "variant": name,
                    "ms/step": r["seconds"] * 1000,
                    "samples/s": args.batch / r["seconds"],
                    "GFLOP/step": flops / 1e9,
                    "GFLOP/s": flops / r["seconds"] / 1e9,
                    "peak GFLOP/s": peak / 1e9,
                    "MFU": flops / r["seconds"] / peak,
                    "compile s": r["compile_s"],
                }
            )
            print(rows[-1], flush=True)
    tables = []
    if model_rows:
        lines = [
            "| threads | data | model | params | examples/step | ms/step | samples/s | GFLOP/step | GFLOP/s | peak GFLOP/s | MFU |",
            "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in model_rows:
            lines.append(
                f"| {r['threads']} | {r['data']} | {r['model']} | {r['params'] / 1e6:.2f}M | {r['examples/step']:.0f} | {r['ms/step']:.0f} | "
                f"{r['samples/s']:.0f} | {r['GFLOP/step']:.2f} | {r['GFLOP/s']:.1f} | {r['peak GFLOP/s']:.1f} | {r['MFU']:.1%} |"
            )
        tables.append("\n".join(lines))
    if rows:
        lines = [
            "| threads | variant | ms/step | samples/s | speed-up | GFLOP/step | GFLOP/s | peak GFLOP/s | MFU | compile s |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            first = next(x for x in rows if x["threads"] == r["threads"])
            lines.append(
                f"| {r['threads']} | {r['variant']} | {r['ms/step']:.0f} | {r['samples/s']:.0f} | {first['ms/step'] / r['ms/step']:.2f}x | "
                f"{r['GFLOP/step']:.2f} | {r['GFLOP/s']:.1f} | {r['peak GFLOP/s']:.1f} | {r['MFU']:.1%} | {r['compile s']:.1f} |"
            )
        tables.append("\n".join(lines))
    for table in tables:
        print(table)
    if args.out:
        shapes = (
            "; ".join(
                f"{name}: {items} items with random distinct {args.levels}x{codebook} IDs, users of {user_items} items"
                for name, (items, codebook, user_items) in sizes.items()
            )
            + f"; each user's sliding-window training examples (up to {args.history}-item histories), batch {args.batch} (the trainer's sampler: packed "
            "chunks for the decoder)"
        )
        text = (
            "# Training-step throughput (CPU)\n\n"
            f"Command: `python benchmarks/train_step_speed.py {' '.join(sys.argv[1:])}`\n\n"
            f"Machine: {machine_line}; {datetime.date.today()}.\n\n"
            f"Setting: {shapes}. samples/s = training examples per second (a packed sequence counts as the examples it holds). "
            "FLOPs: the matmuls (and attention products) of the forward and backward pass, summed from their shapes (FlopCounterMode on 4 of the timed "
            "batches, after the timing), "
            "not 6 x params x tokens; peak: best float32 2048x2048 matmul at that thread count; MFU = FLOP/s / peak. "
            "Timings compare only within one run of this script.\n"
        )
        if model_rows:
            text += (
                "\n## The models, with the project's recommender params\n\n`decoder_only`: packed training (`pack_examples` from params.yaml); "
                "`tiger_items` / `tiger_tokens`: the T5 with `encoder_input: items` / `tokens` (unpacked: one sequence per example). "
                "Timed: `Method.collate` + `Trainer.train_step`, median over the timed steps.\n\n" + tables[0] + "\n"
            )
        if rows:
            text += (
                "\n## The T5 items step's optimisation ladder\n\nFull 20-item histories, one example per user; each variant adds one change to the row "
                "above it; "
                "speed-up is against `before` at the same thread count.\n\n" + tables[-1] + "\n"
            )
        Path(args.out).with_suffix(".md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
