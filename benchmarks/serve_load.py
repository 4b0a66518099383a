"""Load test of the HTTP service (``genrec serve``): requests/s and latency at several concurrencies.

Usage (repository root, venv active):

    python benchmarks/serve_load.py --bundle bundle/ --out reports/benchmarks/serve.md

starts ``genrec serve BUNDLE`` on a free port of 127.0.0.1 (its own process; stopped at the end),
or, with ``--url http://127.0.0.1:PORT``, measures a service already running there (the bundle
then only supplies item ids for the histories). Only 127.0.0.1 / localhost is accepted.

For each concurrency level (default 1, 8, 32) that many asyncio clients (httpx) send
``POST /recommend`` with histories of ``--history-len`` random catalogue items (seeded) and
``k = --k``, each client one request at a time, until ``--requests`` requests were sent at that
level or ``--seconds`` passed (both bounded: the run never exceeds levels x seconds plus start-up).
A few warm-up requests precede each level and are not counted. Reported per level: completed
requests, requests/s (completed / wall time), p50 and p99 latency, errors (non-200 answers and
transport failures), and the server's largest micro-batch (``GET /health``). Writes the table with
the machine, the server settings and the command to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from genrec_core.io import atomic_path  # noqa: E402

LOCAL = ("127.0.0.1", "localhost")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _histories(bundle: Path, n: int, length: int, seed: int) -> list[list[str]]:
    import polars as pl

    ids = pl.read_parquet(bundle / "items.parquet")["source_item_id"].cast(pl.String).to_list()
    rng = np.random.default_rng(seed)
    return [[ids[i] for i in rng.integers(0, len(ids), size=length)] for _ in range(n)]


def start_server(bundle: Path, max_wait_ms: float, max_batch: int, timeout: float = 180.0) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    cmd = [
        sys.executable,
        "-m",
        "genrec_core.cli",
        "serve",
        str(bundle),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-wait-ms",
        str(max_wait_ms),
        "--max-batch",
        str(max_batch),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(proc, url, timeout)
    return proc, url


def wait_until_healthy(proc: subprocess.Popen, url: str, timeout: float) -> None:
    """Poll ``url``/health until it answers 200; exit with the server's stderr if it died, kill it
    after ``timeout`` seconds."""
    import httpx

    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"error: genrec serve exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.time() > deadline:
            proc.kill()
            raise SystemExit(f"error: genrec serve did not answer within {timeout:.0f} s")
        time.sleep(0.3)


async def run_level(url: str, concurrency: int, histories: list[list[str]], k: int, max_requests: int, seconds: float, warmup: int = 3) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2)
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as client:
        for h in histories[:warmup]:
            await client.post("/recommend", json={"history": h, "k": k})
        latencies: list[float] = []
        errors = 0
        sent = 0
        start = time.perf_counter()
        deadline = start + seconds

        async def worker(wid: int) -> None:
            nonlocal sent, errors
            while sent < max_requests and time.perf_counter() < deadline:
                i = sent
                sent += 1
                t = time.perf_counter()
                try:
                    r = await client.post("/recommend", json={"history": histories[i % len(histories)], "k": k})
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t)
                else:
                    errors += 1

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        wall = time.perf_counter() - start
        health = (await client.get("/health")).json()
    lat = np.array(latencies) * 1000.0
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "seconds": wall,
        "rps": len(latencies) / wall if wall > 0 else 0.0,
        "p50": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "p99": float(np.percentile(lat, 99)) if lat.size else float("nan"),
        "largest_batch": health.get("largest_batch"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, required=True, help="exported bundle (served, or only the source of item ids with --url)")
    ap.add_argument("--url", default=None, help="a running service on 127.0.0.1 (default: start genrec serve)")
    ap.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts")
    ap.add_argument("--requests", type=int, default=500, help="at most this many requests per level")
    ap.add_argument("--seconds", type=float, default=20.0, help="at most this long per level")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--history-len", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-wait-ms", type=float, default=5.0, help="server micro-batching wait (started server only)")
    ap.add_argument("--max-batch", type=int, default=64, help="server largest batch (started server only)")
    ap.add_argument("--out", type=Path, default=Path("reports/benchmarks/serve.md"))
    args = ap.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not levels or min(levels) < 1 or args.requests < 1 or args.seconds <= 0:
        ap.error("--concurrency, --requests and --seconds must be positive")
    if args.url is not None and urlparse(args.url).hostname not in LOCAL:
        ap.error(f"--url must point at 127.0.0.1 or localhost, got {args.url}")
    if not (args.bundle / "manifest.json").exists():
        ap.error(f"{args.bundle}: not a genrec bundle (no manifest.json)")

    import json

    manifest = json.loads((args.bundle / "manifest.json").read_text())
    histories = _histories(args.bundle, max(args.requests, 64), args.history_len, args.seed)
    proc = None
    url = args.url
    if url is None:
        proc, url = start_server(args.bundle, args.max_wait_ms, args.max_batch)
    try:
        results = [asyncio.run(run_level(url, c, histories, args.k, args.requests, args.seconds)) for c in levels]
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

    header = "| Clients | Requests | Errors | Seconds | Requests/s | p50 ms | p99 ms | Largest batch so far |"
    rows = [header, "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        rows.append(
            f"| {r['concurrency']} | {r['requests']} | {r['errors']} | {r['seconds']:.1f} | {r['rps']:.1f} | {r['p50']:.1f} | {r['p99']:.1f} | "
            f"{r['largest_batch']} |"
        )
    server = "started by the script" if proc is not None else f"already running at {url}"
    text = "\n".join(
        [
            "# HTTP service load test (genrec serve)",
            "",
            f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} by `benchmarks/serve_load.py` (issue 14 part 5).",
            "",
            f"Model: {manifest.get('model_kind')} over {manifest.get('num_items')} items (bundle {args.bundle}), beam size "
            f"{manifest.get('serving', {}).get('beam_size')}; "
            f"server {server}" + (f", --max-wait-ms {args.max_wait_ms}, --max-batch {args.max_batch}" if proc is not None else "") + ", 127.0.0.1, CPU.",
            f"Requests: POST /recommend, k={args.k}, histories of {args.history_len} random items (seed {args.seed}); per level at most {args.requests} "
            f"requests or {args.seconds:g} s; "
            "each client sends one request at a time; latency is the client's (request sent to answer read).",
            "",
            *rows,
            "",
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; the clients run on the "
            "same machine as the server.",
            "",
            "Command:",
            "",
            "```",
            "python benchmarks/serve_load.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "```",
            "",
        ]
    )
    with atomic_path(args.out) as tmp:  # a failed run leaves no half-written report
        tmp.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
