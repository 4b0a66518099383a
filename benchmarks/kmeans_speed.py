"""k-means speed against an earlier commit's ``genrec_core/tokenizers/kmeans.py``, in one run.

Why: RQ-KMeans and the RQ-VAE's k-means initialisation spend their time in k-means++ seeding
(K passes over the data) and Lloyd's iterations; this times both implementations on the same
seeded Gaussian data, in the same process, and checks that they return the same centroids,
assignments and inertia bit for bit (a speed change must not change any ID).

    python benchmarks/kmeans_speed.py --ref-commit bd43fa8 --sizes 60000x384 --k 256 --iters 5
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genrec_core.tokenizers import kmeans as current  # noqa: E402


def load_reference(commit: str):
    """The module ``kmeans.py`` as it was at ``commit`` (read with git show)."""
    source = subprocess.run(["git", "show", f"{commit}:genrec_core/tokenizers/kmeans.py"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "kmeans_reference.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("kmeans_reference", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def timed(module, x: torch.Tensor, k: int, iters: int, seed: int):
    start = time.perf_counter()
    result = module.kmeans(x, k, iters=iters, generator=torch.Generator().manual_seed(seed))
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref-commit", required=True, help="the commit whose kmeans.py is the reference")
    parser.add_argument("--sizes", nargs="+", default=["60000x384"], help="NxD of the data, e.g. 60000x384")
    parser.add_argument("--k", type=int, default=256)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    reference = load_reference(args.ref_commit)
    print(f"torch threads: {torch.get_num_threads()}; K={args.k}, {args.iters} Lloyd iterations, k-means++ init")
    print(f"| N x d | {args.ref_commit} s | current s | speed-up | identical |")
    print("|---|---:|---:|---:|---|")
    for size in args.sizes:
        n, d = (int(v) for v in size.lower().split("x"))
        x = torch.randn(n, d, generator=torch.Generator().manual_seed(args.seed))
        ref, t_ref = timed(reference, x, args.k, args.iters, args.seed)
        new, t_new = timed(current, x, args.k, args.iters, args.seed)
        same = torch.equal(ref.centroids, new.centroids) and torch.equal(ref.assignments, new.assignments) and ref.inertia == new.inertia
        print(f"| {n:,} x {d} | {t_ref:.2f} | {t_new:.2f} | {t_ref / t_new:.2f}x | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
