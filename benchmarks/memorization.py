"""How much a trained TIGER recites its training windows, and why that flatters validation.

Usage (repository root, venv active):

    python benchmarks/memorization.py --run default=. \\
        --run hdrop0.2=/tmp/genrec_converged/tiger-hdrop0.2-s42 --out reports/benchmarks/memorization

Each ``--run NAME=DIR`` is a workspace with ``data/processed`` and ``data/recommender/best.pt`` (a
``genrec train`` of the generative model). Its best checkpoint ranks five sets of one example per
user, all built from ``data/processed/sequences.parquet`` with the run's history window H
(``data.max_items``); ``NAME=DIR::last`` ranks with the weights of the run's ``last.pt`` instead
(the model where training stopped, past the selected epoch). Train = the user's training items,
v = validation item, t = test item:

* ``train last``: ``train[:-1][-H:] -> train[-1]``, a training example (recited if memorised);
* ``valid``: ``train[-H:] -> v``, the validation split itself;
* ``v from last train window``: ``train[:-1][-H:] -> v``, validation's target from the window of
  the last training example (the most recent item left out);
* ``test``: ``(train + [v])[-H:] -> t``, the test split itself;
* ``t without v``: ``train[-H:] -> t``, test's target from validation's window.

Why: on ml-100k our TIGER scored ~30% lower Hit@10 on test than on validation while SASRec, GRU4Rec
and Markov lost at most 13%. Validation's target is the next item after windows the model was trained
on; when the model recites those windows' continuations, the validation target sits in the recited
neighbourhood (``v from last train window`` stays as high as ``valid``), the test target, one step
further, does not. A large ``train last`` / ``test`` ratio means memorisation, and a validation score
that overstates test. Writes ``<out>.md`` (table, machine, command) and ``<out>.csv``.
"""

from __future__ import annotations

import argparse
import csv
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genrec_core.config import load_params  # noqa: E402
from genrec_core.recommender.checkpoint import load_recommender  # noqa: E402
from genrec_core.recommender.checkpoint_format import read_weights  # noqa: E402
from genrec_core.recommender.data import ExampleArrays, SequenceEncoder  # noqa: E402
from genrec_core.recommender.interface import rank_examples  # noqa: E402
from genrec_core.recommender.trainer import validation_metrics  # noqa: E402

CASES = ("train last", "valid", "v from last train window", "test", "t without v")


def probe_examples(sequences: pl.DataFrame, window: int) -> dict[str, ExampleArrays]:
    """The five one-per-user example sets of the module docstring (users with >= 2 training items)."""
    seq = sequences.filter(pl.col("train_items").list.len() >= 2).sort("user_id")
    users = seq["user_id"].to_numpy()
    train = seq["train_items"].to_list()
    valid = seq["valid_item"].to_list()
    test = seq["test_item"].to_list()

    def build(histories: list[list[int]], targets: list[int]) -> ExampleArrays:
        lengths = np.array([len(h) for h in histories], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = np.concatenate([np.asarray(h, dtype=np.int32) for h in histories])
        return ExampleArrays(users.astype(np.int32), offsets, flat, np.asarray(targets, dtype=np.int32))

    return {
        "train last": build([t[:-1][-window:] for t in train], [t[-1] for t in train]),
        "valid": build([t[-window:] for t in train], valid),
        "v from last train window": build([t[:-1][-window:] for t in train], valid),
        "test": build([(t + [v])[-window:] for t, v in zip(train, valid)], test),
        "t without v": build([t[-window:] for t in train], test),
    }


def probe_run(workspace: Path, beam_size: int, batch_size: int, cases: tuple[str, ...] = CASES, weights: str = "best") -> dict[str, dict[str, float]]:
    params = load_params(workspace / "params.yaml")
    loaded = load_recommender(workspace / "data" / "recommender" / "best.pt", "cpu")
    if weights == "last":  # best.pt frames the model (params, IDs); last.pt's training state holds the weights
        loaded.model.load_state_dict(read_weights(workspace / "data" / "recommender" / "last.pt"))
    p = loaded.params
    encoder = SequenceEncoder.for_recommender(loaded.item_tokens, p, loaded.vocab)
    sequences = pl.read_parquet(workspace / "data" / "processed" / "sequences.parquet")
    out = {}
    for case, examples in probe_examples(sequences, params.data.max_items).items():
        if case not in cases:
            continue
        items, _ = rank_examples(loaded.model, examples, encoder.collate, beam_size, batch_size)
        out[case] = {**validation_metrics(items, examples.targets), "users": len(examples.targets)}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="append", required=True, metavar="NAME=DIR[::last]", help="a trained workspace (repeatable)")
    ap.add_argument("--beam-size", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--out", default=None, help="write <out>.md and <out>.csv")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of the cases (large datasets: each case ranks every user)")
    args = ap.parse_args(argv)
    cases = tuple(c.strip() for c in args.cases.split(","))
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise SystemExit(f"--cases: unknown {', '.join(map(repr, unknown))}; known: {', '.join(CASES)}")

    runs = []  # every --run checked before the first one ranks anything (each takes minutes on Beauty)
    for spec in args.run:
        name, _, directory = spec.rpartition("=")  # the last "=": a run's name may hold one
        directory, _, weights = directory.partition("::")
        if not name or not directory or weights not in ("", "best", "last"):
            raise SystemExit(f"--run {spec!r}: expected NAME=DIR or NAME=DIR::last")
        if not (Path(directory) / "params.yaml").exists():
            raise SystemExit(f"--run {spec!r}: {directory} has no params.yaml (not a trained workspace)")
        runs.append((name, directory, weights))
    rows = []
    for name, directory, weights in runs:
        start = time.perf_counter()
        metrics = probe_run(Path(directory), args.beam_size, args.batch_size, cases, weights or "best")
        # each run as it finishes: a probe of a large dataset takes minutes per case
        summary = ", ".join(f"{c} {m['hit@10']:.4f} / {m['ndcg@10']:.4f}" for c, m in metrics.items())
        print(f"{name}: {time.perf_counter() - start:.1f} s; H@10 / N@10: {summary}", file=sys.stderr, flush=True)
        for case in cases:
            rounded = {k: v if k == "users" else round(v, 4) for k, v in metrics[case].items()}
            rows.append({"run": name, "workspace": directory, "weights": weights or "best", "case": case, **rounded})

    ratios = [("test / valid H@10", "test", "valid"), ("train last / test H@10", "train last", "test")]
    ratios = [r for r in ratios if r[1] in cases and r[2] in cases]
    header = "| run | " + " | ".join([f"{c} H@10 / N@10" for c in cases] + [r[0] for r in ratios]) + " |"
    lines = [header, "|---|" + "---:|" * (len(cases) + len(ratios))]
    for name in dict.fromkeys(r["run"] for r in rows):
        by_case = {r["case"]: r for r in rows if r["run"] == name}
        cells = [f"{by_case[c]['hit@10']:.4f} / {by_case[c]['ndcg@10']:.4f}" for c in cases]
        cells += [f"{by_case[a]['hit@10'] / max(by_case[b]['hit@10'], 1e-12):.2f}" for _, a, b in ratios]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        command = "python benchmarks/memorization.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        text = [
            "# Memorisation probe: what the best checkpoint ranks on training, validation and test windows",
            "",
            f"Command: `{command}`",
            f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}. Beam {args.beam_size}.",
            "",
            f"One example per user with >= 2 training items ({rows[0]['users']} in the first run);"
            " the cases are defined in the docstring of benchmarks/memorization.py.",
            "",
            table,
            "",
        ]
        out.with_suffix(".md").write_text("\n".join(text))
        with out.with_suffix(".csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
