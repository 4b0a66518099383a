"""Benchmark: the preprocess stage on a synthetic Amazon-2023 category of N interactions.

Generates the files (benchmarks/make_synthetic_amazon.py), then runs ``genrec preprocess`` in a
child process and reports its wall time and peak resident memory (the child's ru_maxrss), the
figures the issue asks for: can a tens-of-millions-review category be preprocessed on a 2-core,
24 GiB machine?

    python benchmarks/preprocess_10m.py [--interactions 10000000] [--workdir /tmp/genrec-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_synthetic_amazon import make_synthetic_amazon  # noqa: E402


def run_preprocess(raw_dir: Path, category: str, root: Path) -> tuple[float, float]:
    """Run the stage in a fresh process; return (wall seconds, peak RSS in GiB)."""
    cmd = [
        sys.executable, "-m", "genrec_core.cli", "preprocess", "--params", str(root / "params.yaml"),
        "--root", str(root),
        "-S", "data.dataset=amazon2023", "-S", f"data.raw_dir={raw_dir}", "-S", f"data.category={category}",
    ]
    (root / "params.yaml").write_text("seed: 0\n")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak_kib < before:  # pragma: no cover - ru_maxrss is a running max over children
        peak_kib = before
    return seconds, peak_kib / 1024**2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", type=int, default=10_000_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/genrec-bench"))
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args(argv)

    raw_dir = args.workdir / "raw"
    root = args.workdir / "project"
    shutil.rmtree(args.workdir, ignore_errors=True)
    root.mkdir(parents=True)
    synth = make_synthetic_amazon(raw_dir, interactions=args.interactions, category="Synthetic", seed=0)
    size_gb = sum(f.stat().st_size for f in raw_dir.iterdir()) / 1e9
    seconds, peak_gib = run_preprocess(raw_dir, "Synthetic", root)
    stats = json.loads((root / "reports" / "data_stats.json").read_text())

    rows = [
        ("machine", f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"),
        ("raw interactions", f"{synth.interactions:,}"),
        ("raw files", f"{size_gb:.2f} GB jsonl"),
        ("generation", f"{synth.seconds:.1f} s"),
        ("after 5-core", f"{stats['interactions']:,} interactions, {stats['users']:,} users, {stats['items']:,} items ({stats['k_core_rounds']} rounds)"),
        ("train examples", f"{stats['examples']['train']:,}"),
        ("preprocess wall time", f"{seconds:.1f} s"),
        ("preprocess peak RSS", f"{peak_gib:.2f} GiB"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"| {'what'.ljust(width)} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for key, value in rows:
        print(f"| {key.ljust(width)} | {value} |")
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
