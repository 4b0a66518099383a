"""Data-parallel training under torchrun (gloo on the CPU; ``recommender/distributed.py``).

Two processes with the same global batch and seed end with the weights of one process (up to float
summation order); an interrupted DDP run resumes to the weights of an uninterrupted one; only rank 0
writes. The runs are ``tests/ddp_worker.py`` (tiny synthetic data, dropout 0) launched by
``python -m torch.distributed.run --standalone --nproc_per_node 2``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genrec_core.recommender.distributed import shard_slice

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "ddp_worker.py"

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)


def launch(kind: str, workdir: Path, processes: int, **env: str) -> subprocess.CompletedProcess:
    """Run the worker (under torchrun when ``processes`` > 1); the completed process."""
    workdir.mkdir(parents=True, exist_ok=True)
    prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] if processes > 1 else [sys.executable]
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1", **env}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        full_env.pop(key, None)
    return subprocess.run([*prefix, str(WORKER), kind, str(workdir)], env=full_env, capture_output=True, text=True, timeout=300)


def trained(kind: str, workdir: Path, processes: int, **env: str) -> dict[str, torch.Tensor]:
    proc = launch(kind, workdir, processes, **env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return torch.load(workdir / "weights.pt")


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def tiger_runs(tmp_path_factory):
    """The T5 trained by one process and by two (dvclive on; ranks > 0 refuse any write)."""
    base = tmp_path_factory.mktemp("tiger")
    one = trained("tiger", base / "one", 1, DDP_TEST_DVCLIVE="1")
    two = trained("tiger", base / "two", 2, DDP_TEST_DVCLIVE="1", DDP_TEST_AUDIT="1")
    return base, one, two


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=tol, atol=tol, msg=lambda m, n=name: f"{n}: {m}")


def test_shard_slice_parts():
    """Contiguous parts of sizes differing by at most one; chunk starts are never cut; world 1: all."""
    assert [shard_slice(7, r, 2) for r in range(2)] == [slice(0, 4), slice(4, 7)]
    assert shard_slice(7, 0, 1) == slice(0, 7)
    assert [shard_slice(1, r, 2) for r in range(2)] == [slice(0, 1), slice(1, 1)]
    starts = np.array([0, 3, 4, 8])
    assert [shard_slice(10, r, 2, starts) for r in range(2)] == [slice(0, 4), slice(4, 10)]


def test_tiger_two_processes_match_one(tiger_runs):
    _, one, two = tiger_runs
    assert_same_weights(one, two)


def test_sasrec_two_processes_match_one(tmp_path):
    assert_same_weights(trained("sasrec", tmp_path / "one", 1), trained("sasrec", tmp_path / "two", 2))


def test_only_rank_0_writes(tiger_runs):
    """The DDP run's checkpoint and report folders hold exactly what one process writes (the
    worker makes every write on rank 1 raise, so a stray one would have failed the run)."""
    base = tiger_runs[0]
    for sub in ("ckpt", "reports"):
        assert files_under(base / "two" / sub) == files_under(base / "one" / sub)
    assert (base / "two" / "reports" / "live").is_dir()


def test_interrupted_ddp_run_resumes_to_the_same_weights(tiger_runs, tmp_path):
    """A SIGTERM on rank 1 after step 17 (mid-epoch 2) stops both ranks; rank 0 saves last.pt; the
    rerun resumes from it and ends where the uninterrupted DDP run did."""
    proc = launch("tiger", tmp_path, 2, DDP_TEST_STOP_AT="17", DDP_TEST_AUDIT="1")
    assert proc.returncode != 0
    assert (tmp_path / "ckpt" / "last.pt").exists() and not (tmp_path / "reports" / "summary.json").exists()
    state = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=False)["state"]
    assert state["step"] == 17 and not state["finished"]
    resumed = trained("tiger", tmp_path, 2, DDP_TEST_AUDIT="1")
    assert '"resumed": true' in (tmp_path / "reports" / "summary.json").read_text()
    assert_same_weights(tiger_runs[2], resumed, tol=1e-6)


def test_packed_shards_sum_to_the_global_gradient(tmp_path):
    """decoder_only with pack_examples: the ranks' parts (cut between chunks, scaled by their share)
    give the gradient of the whole global batch, which DDP's average then reproduces."""
    sys.path.insert(0, str(WORKER.parent))
    import ddp_worker

    trainer = ddp_worker.build("decoder_only", tmp_path)
    index = next(iter(trainer.sampler))
    starts = np.flatnonzero(np.isin(index, trainer.sampler.chunks[:, 0]))
    parts = [shard_slice(len(index), r, 2, starts) for r in range(2)]

    def gradient(pieces):
        trainer.model.zero_grad()
        for part, scale in pieces:
            out = trainer.method.compute_losses(trainer, trainer.method.collate(trainer, trainer.train_examples, index, part))
            (out.loss * scale).backward()
        return {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}

    whole = gradient([(None, 1.0)])
    split = gradient([(p, (p.stop - p.start) / len(index)) for p in parts])
    assert all(p.stop > p.start for p in parts)
    assert_same_weights(whole, split, tol=1e-6)


def test_processes_param_and_the_torchrun_relaunch(monkeypatch):
    """``recommender.processes``: validated >= 1, not in the resume fingerprint; > 1 makes
    ``genrec train`` rerun itself under torchrun with the same arguments (not when already under it)."""
    from genrec_core import cli
    from genrec_core.config import RecommenderParams
    from genrec_core.errors import ParamError
    from genrec_core.recommender.fingerprint import FINGERPRINT_EXCLUDED

    with pytest.raises(ParamError, match="recommender.processes"):
        RecommenderParams(processes=0).validate()
    assert "processes" in FINGERPRINT_EXCLUDED
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 7)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(Exception) as exit_info:
        cli.train(ROOT / "params.yaml", ["recommender.processes=3"], Path("."))
    assert getattr(exit_info.value, "exit_code", None) == 7
    assert calls[0][1:7] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "3", "-m"]
    assert calls[0][7:] == ["genrec_core.cli", "train", "--params", str(ROOT / "params.yaml"), "--root", ".", "-S", "recommender.processes=3"]
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert cli._train_processes(ROOT / "params.yaml", ["recommender.processes=3"]) == 1


def test_mtgrec_two_processes_match_one(tmp_path):
    """MTGRec: every rank computes the stage-end influence itself on the full data, so both ranks
    hold the p (and drawn counts) of one process, and the weights match."""
    one = trained("mtgrec", tmp_path / "one", 1)
    two = trained("mtgrec", tmp_path / "two", 2, DDP_TEST_AUDIT="1")
    assert_same_weights(one, two)
    reference = np.load(tmp_path / "one" / "p_rank0.npy")
    assert not np.allclose(reference[:3], 1 / 3)  # the stage end moved p
    for r in range(2):
        np.testing.assert_allclose(np.load(tmp_path / "two" / f"p_rank{r}.npy"), reference, rtol=1e-6, atol=1e-8)
    assert (tmp_path / "two" / "method" / "influence.csv").exists()


def test_cft_second_forward_through_ddp_matches_one(tmp_path):
    """cft runs a second (counterfactual) forward pass per step through the DDP wrapper: the
    gradients of both passes are all-reduced, so two processes still match one."""
    one = trained("tiger", tmp_path / "one", 1, DDP_TEST_LOSS="cft")
    assert_same_weights(one, trained("tiger", tmp_path / "two", 2, DDP_TEST_LOSS="cft"))
