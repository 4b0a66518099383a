"""Benchmark: the preprocess stage on synthetic Amazon-2023 categories of several sizes.

For each size, generates the files (benchmarks/make_synthetic_amazon.py, in a child process), runs
``genrec preprocess`` on them in another child and reports its wall time and peak resident memory
(that child's own ru_maxrss, from wait4), then deletes the files before the next size. The question
it answers: does peak memory grow with the raw file, or only with the columns kept from it?

    python benchmarks/preprocess_scale.py --interactions 10000000,30000000 [--workdir /tmp/genrec-bench]

``--max-rss-gib`` stops a preprocess run whose resident set passes that much (the row then says so).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from benchmarks.procmem import rss_gib  # noqa: E402

CATEGORY = "Synthetic"


def parse_sizes(text: str) -> list[int]:
    """``10000000,30000000`` or ``10M,30M`` (K and M suffixes) -> [10000000, 30000000]."""
    sizes = []
    for part in text.split(","):
        part = part.strip().replace("_", "").upper()
        scale = {"K": 1_000, "M": 1_000_000}.get(part[-1:], 1)
        sizes.append(int(float(part[:-1] if scale > 1 else part) * scale))
    if not sizes or min(sizes) <= 0:
        raise ValueError(f"--interactions: positive sizes separated by commas, got {text!r}")
    return sizes


def run_child(cmd: list[str], max_rss_gib: float | None = None, env: dict | None = None) -> tuple[float, float, bool]:
    """Run ``cmd``; return (wall seconds, its peak RSS in GiB, stopped for passing max_rss_gib)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    stopped = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if max_rss_gib is not None and not stopped and rss_gib(proc.pid) > max_rss_gib:
            proc.kill()
            stopped = True
        time.sleep(0.2)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 and not stopped:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return seconds, usage.ru_maxrss / 1024**2, stopped


def measure(interactions: int, workdir: Path, max_rss_gib: float | None = None) -> dict:
    raw_dir = workdir / f"raw-{interactions}"
    root = workdir / f"project-{interactions}"
    shutil.rmtree(raw_dir, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    gen_s, gen_rss, _ = run_child(
        [sys.executable, str(HERE / "make_synthetic_amazon.py"), str(raw_dir), "--interactions", str(interactions), "--category", CATEGORY]
    )
    size_gb = sum(f.stat().st_size for f in raw_dir.iterdir()) / 1e9
    review_gb = (raw_dir / f"{CATEGORY}.jsonl").stat().st_size / 1e9
    (root / "params.yaml").write_text("seed: 0\n")
    cmd = [
        sys.executable,
        "-m",
        "genrec_core.cli",
        "preprocess",
        "--params",
        str(root / "params.yaml"),
        "--root",
        str(root),
        "-S",
        "data.dataset=amazon2023",
        "-S",
        f"data.raw_dir={raw_dir}",
        "-S",
        f"data.category={CATEGORY}",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))}
    seconds, peak_gib, stopped = run_child(cmd, max_rss_gib, env)
    row = {
        "interactions": interactions,
        "files_gb": size_gb,
        "reviews_gb": review_gb,
        "generation_s": gen_s,
        "preprocess_s": seconds,
        "peak_rss_gib": peak_gib,
        "stopped": stopped,
    }
    if not stopped:
        stats = json.loads((root / "reports" / "data_stats.json").read_text())
        row.update(
            after_interactions=stats["interactions"],
            users=stats["users"],
            items=stats["items"],
            rounds=stats["k_core_rounds"],
            train_examples=stats["examples"]["train"],
        )
    shutil.rmtree(raw_dir, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    return row


def table(rows: list[dict]) -> str:
    lines = [
        "| raw interactions | raw files (reviews) | generation | after 5-core: interactions / users / items (rounds) | train examples | preprocess "
        "wall | peak RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["stopped"]:
            after, train, peak = "(stopped)", "", f"> {r['peak_rss_gib']:.2f} GiB (stopped at --max-rss-gib)"
        else:
            after = f"{r['after_interactions']:,} / {r['users']:,} / {r['items']:,} ({r['rounds']})"
            train, peak = f"{r['train_examples']:,}", f"{r['peak_rss_gib']:.2f} GiB"
        lines.append(
            f"| {r['interactions']:,} | {r['files_gb']:.2f} GB ({r['reviews_gb']:.2f} GB) | {r['generation_s']:.0f} s | {after} | {train} | "
            f"{r['preprocess_s']:.0f} s | {peak} |"
        )
    return "\n".join(lines)


def machine_line() -> str:
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 1024**2:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{platform.machine()}, {os.cpu_count()} cores{mem}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", default="10000000,30000000", help="sizes, comma-separated (10M,30M also works)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/genrec-bench"))
    parser.add_argument("--max-rss-gib", type=float, default=None, help="stop a preprocess run past this resident set")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)

    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in parse_sizes(args.interactions):
        rows.append(measure(n, args.workdir, args.max_rss_gib))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {machine_line()}\n")
    print(table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
