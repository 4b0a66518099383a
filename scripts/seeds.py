"""Queue one configuration under n seeds as DVC experiments (SPEC 5: 5 seeds per method).

    python scripts/seeds.py --n 5 -S recommender.model=sasrec            # print the commands
    python scripts/seeds.py --n 5 -S recommender.model=sasrec --run      # queue them
    dvc queue start -j 1 && dvc queue status                             # run the queue
    python -m stages.results --baseline tiger/ce                         # table with p-values

Each command is ``dvc exp run --queue --name <prefix>-s<seed> -S seed=<seed> <your -S ...>``.
Seeds are ``--first-seed`` .. ``--first-seed + n - 1`` (default 0..4), or ``--seeds 1,7,9``. Use
the same seeds for every method so the comparison is seed for seed. ``seed`` is the recommender's
(train, analyse): every seed of a method reuses one ID table; the tokenizer's own seed is
``tokenizer.seed`` (add ``-S tokenizer.seed=<n>`` to vary the IDs as well).
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path


def seed_list(n: int, first: int, explicit: str | None) -> list[int]:
    if explicit:
        return [int(s) for s in explicit.split(",") if s.strip()]
    if n < 1:
        raise SystemExit("--n must be >= 1")
    return list(range(first, first + n))


def default_prefix(overrides: list[str]) -> str:
    """A readable experiment-name prefix from the overrides' values (DVC names: [A-Za-z0-9-_])."""
    values = [o.split("=", 1)[1] for o in overrides if "=" in o]
    text = "-".join(values) or "default"
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:40] or "run"


def commands(seeds: list[int], overrides: list[str], prefix: str, queue: bool = True) -> list[list[str]]:
    if any(o.split("=", 1)[0].strip() == "seed" for o in overrides):
        raise SystemExit("do not pass -S seed=...: this script sets the seed")
    out = []
    for seed in seeds:
        cmd = ["dvc", "exp", "run"] + (["--queue"] if queue else []) + ["--name", f"{prefix}-s{seed}", "-S", f"seed={seed}"]
        for o in overrides:
            cmd += ["-S", o]
        out.append(cmd)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/seeds.py", description="Queue a configuration under n seeds (dvc exp run --queue).")
    ap.add_argument("--n", type=int, default=5, help="number of seeds (default 5)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--seeds", help="explicit comma-separated seeds (overrides --n/--first-seed)")
    ap.add_argument("-S", "--set", dest="overrides", action="append", default=[], help="a param override, as for dvc exp run -S (repeatable)")
    ap.add_argument("--name", help="experiment name prefix (default: from the override values)")
    ap.add_argument("--run", action="store_true", help="execute the commands (default: print them)")
    ap.add_argument("--now", action="store_true", help="run each experiment at once instead of queueing it")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from genrec_core.config import absolute_path_overrides

    overrides = args.overrides if args.now else absolute_path_overrides(args.overrides)
    cmds = commands(seed_list(args.n, args.first_seed, args.seeds), overrides, args.name or default_prefix(args.overrides), queue=not args.now)
    for cmd in cmds:
        print(shlex.join(cmd))
        if args.run:
            subprocess.run(cmd, check=True)
    if not args.now:
        print("# then: dvc queue start -j 1   (and python -m stages.results --baseline <method> when they have finished)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
