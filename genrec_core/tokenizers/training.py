"""Tokenizer training: RQ-VAE epochs with resumable checkpoints, kept per-epoch tokenizers (for
MTGRec's multi-identifier tables) and per-epoch health metrics; PQ and RQ-KMeans in one shot.
Which function a ``tokenizer.kind`` runs, and how its kept files load, is its spec's
(``spec.py``, ``kinds/``); this module holds the fitting code and the file layout they share.

Files (``tokenizer_dir`` = data/tokenizer, ``reports_dir`` = reports/tokenizer):
  tokenizer_dir/last.pt              RQ-VAE only: resumable state, rewritten atomically each epoch
  tokenizer_dir/kept/epoch_XXXX.pt   tokenizer after each of the last ``keep_last`` epochs
  tokenizer_dir/kept/pq.pt           PQ: its single tokenizer
  tokenizer_dir/kept/rqkmeans.pt     RQ-KMeans: its single tokenizer
  reports_dir/history.csv            one row per epoch (PQ, RQ-KMeans: one row), for ``dvc plots``
  reports_dir/metrics.json           final summary, for ``dvc metrics``

Resumption: a run killed after epoch e restarts at e + 1 from last.pt (weights, optimizer, EMA
buffers, RNG states, history), so on the CPU it ends bitwise identical to an uninterrupted run.
The checkpoint stores a hash of the tokenizer params, the seed and the input vectors; any
difference (or a missing kept file) means a fresh start.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from genrec_core.config import TokenizerParams
from genrec_core.errors import MissingInputError, ParamError
from genrec_core.io import save_torch, write_json, write_text
from genrec_core.runtime import resolve_device, seed_everything
from genrec_core.tokenizers.base import SemanticTokenizer
from genrec_core.tokenizers.code_stats import code_metrics
from genrec_core.tokenizers.pq import PQTokenizer
from genrec_core.tokenizers.rqkmeans import RQKMeansTokenizer
from genrec_core.tokenizers.rqvae import RQVAE, RQVAEConfig, RQVAETokenizer
from genrec_core.tokenizers.spec import own_flat_params, resolved_kind_params, tokenizer_spec

CHECKPOINT_FORMAT = 1
_KEPT_RE = re.compile(r"^(?:epoch|seed)_(\d+)\.pt$")  # seed_XXXX: tokenizer.kept_from seeds (seed_runs.py)


# --------------------------------------------------------------------------- helpers


def fingerprint(vectors: np.ndarray, item_ids: np.ndarray | None = None) -> str:
    """sha256 of the input vectors (and item ids): a checkpoint trained on other data is stale."""
    h = hashlib.sha256()
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    h.update(str(v.shape).encode())
    h.update(v.tobytes())
    if item_ids is not None:
        h.update(np.ascontiguousarray(item_ids, dtype=np.int64).tobytes())
    return h.hexdigest()


def params_hash(tp: TokenizerParams, seed: int, data_fp: str) -> str:
    """Identity of a training run: the shared tokenizer params and the kind's own (under their old
    flat names: ``spec.own_flat_params``), the seed and the data fingerprint. Another kind's params
    never count (RQ-VAE checkpoints written before ``rqkmeans_normalize`` existed still resume),
    ``kept_from`` neither (it picks runs, each hashed as itself: seed_runs)."""
    tok = own_flat_params(tp)
    tok.pop("kept_from", None)
    blob = json.dumps({"tokenizer": tok, "seed": seed, "data": data_fp}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def kept_name(epoch: int) -> str:
    return f"epoch_{epoch:04d}"


def _kept_dir(tokenizer_dir: Path) -> Path:
    return Path(tokenizer_dir) / "kept"


def _clear_kept(tokenizer_dir: Path, keep: set[str] = frozenset()) -> None:
    d = _kept_dir(tokenizer_dir)
    if d.is_dir():
        for f in d.glob("*.pt"):
            if f.stem not in keep:
                f.unlink()


def _write_history(history: list[dict[str, Any]], path: Path) -> None:
    write_text(pl.DataFrame(history).write_csv(), path)


def _cpu_rng_state() -> torch.Tensor:
    return torch.get_rng_state()


# --------------------------------------------------------------------------- loading


def load_tokenizer(path: str | Path, device: str = "cpu") -> SemanticTokenizer:
    """Rebuild a tokenizer (any registered kind: the file's ``"kind"`` names its spec) from a kept file."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    kind = state.get("kind")
    try:
        spec = tokenizer_spec(kind)
    except ParamError:
        raise ValueError(f"{path}: unknown tokenizer kind {kind!r}") from None
    return spec.from_state(state, device)


def load_kept_tokenizers(tokenizer_dir: str | Path, device: str = "cpu") -> list[tuple[str, SemanticTokenizer]]:
    """All kept tokenizers as (name, tokenizer), sorted by epoch: ("epoch_0196", ...) for RQ-VAE (by seed: "seed_0042", ... with kept_from seeds),
    [("pq", ...)] for PQ, [("rqkmeans", ...)] for RQ-KMeans. The last entry is the final tokenizer (single-ID tables use it)."""
    d = _kept_dir(Path(tokenizer_dir))
    files = sorted(d.glob("*.pt")) if d.is_dir() else []
    if not files:
        raise MissingInputError(d, "kept tokenizers; run the train-tokenizer stage first")

    def order(f: Path) -> tuple[int, str]:
        m = _KEPT_RE.match(f.name)
        return (int(m.group(1)) if m else -1, f.stem)

    return [(f.stem, load_tokenizer(f, device)) for f in sorted(files, key=order)]


# --------------------------------------------------------------------------- RQ-VAE


def _make_optimizer(model: RQVAE, tp: TokenizerParams) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if tp.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=tp.lr, weight_decay=tp.weight_decay)
    return torch.optim.AdamW(params, lr=tp.lr, weight_decay=tp.weight_decay)


@torch.no_grad()
def _assign_all(model: RQVAE, x: torch.Tensor, batch: int = 8192) -> np.ndarray:
    """Codes of every item in eval mode (what the kept tokenizer of this epoch will give)."""
    was_training = model.training
    model.eval()
    codes = [model.quantizer.assign(model.encoder(x[s : s + batch]))[0] for s in range(0, x.shape[0], batch)]
    model.train(was_training)
    return torch.cat(codes).cpu().numpy()


def _try_resume(path: Path, phash: str, tp: TokenizerParams, tokenizer_dir: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable (should not happen: writes are atomic) -> fresh start
        return None
    if ckpt.get("format") != CHECKPOINT_FORMAT or ckpt.get("params_hash") != phash:
        return None
    epoch = int(ckpt["epoch"])
    if not 1 <= epoch <= tp.epochs:
        return None
    first_kept = tp.epochs - tp.keep_last + 1
    for e in range(max(first_kept, 1), epoch + 1):
        if not (_kept_dir(tokenizer_dir) / f"{kept_name(e)}.pt").exists():
            return None
    return ckpt


def train_rqvae(
    vectors: np.ndarray,
    tp: TokenizerParams,
    seed: int,
    tokenizer_dir: str | Path,
    reports_dir: str | Path,
    item_ids: np.ndarray | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train (or resume) an RQ-VAE on ``vectors`` [N, D]; returns the metrics.json summary.

    ``on_epoch_end(epoch, row)`` runs after each epoch's files are written (tests use it to
    simulate a kill)."""
    from tqdm.auto import tqdm

    tokenizer_dir, reports_dir = Path(tokenizer_dir), Path(reports_dir)
    ckpt_path = tokenizer_dir / "last.pt"
    history_path, metrics_path = reports_dir / "history.csv", reports_dir / "metrics.json"
    device = resolve_device(tp.device)
    kp = resolved_kind_params(tp, "rqvae")
    x_np = np.require(vectors, np.float32, ["C_CONTIGUOUS", "WRITEABLE"])
    n, dim = x_np.shape
    phash = params_hash(tp, seed, fingerprint(x_np, item_ids))

    seed_everything(seed)
    cfg = RQVAEConfig(
        dim, tp.levels, tp.codebook_size, list(kp["hidden_dims"]), kp["latent_dim"], kp["dropout"], kp["beta"], kp["codebook_update"], kp["ema_decay"]
    )
    model = RQVAE(cfg).to(device)
    opt = _make_optimizer(model, tp)
    gen = torch.Generator().manual_seed(seed)  # shuffling, k-means, re-seeding: one CPU stream
    history: list[dict[str, Any]] = []
    start, seconds_before = 0, 0.0

    ckpt = _try_resume(ckpt_path, phash, tp, tokenizer_dir)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        if device.startswith("cuda") and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"], torch.device(device))
        history = list(ckpt["history"])
        start, seconds_before = int(ckpt["epoch"]), float(ckpt["seconds"])
    else:
        _clear_kept(tokenizer_dir)
        if ckpt_path.exists():
            ckpt_path.unlink()

    x = torch.from_numpy(x_np).to(device)
    bs = n if tp.batch_size == 0 or tp.batch_size >= n else tp.batch_size
    k, levels = tp.codebook_size, tp.levels
    first_kept = tp.epochs - tp.keep_last + 1
    t_run = time.perf_counter()
    bar = tqdm(range(start, tp.epochs), initial=start, total=tp.epochs, desc="rq-vae", unit="epoch", disable=not progress)
    for epoch0 in bar:
        epoch = epoch0 + 1
        t0 = time.perf_counter()
        model.train()
        order = torch.arange(n) if bs == n else torch.randperm(n, generator=gen)
        order = order.to(device)
        if not bool(model.quantizer.initialized):
            if kp["kmeans_init"]:
                # the first batch, widened to >= 4K items so every code has data to start from
                init_idx = order[: min(n, max(bs, 4 * k))]
                was = model.training
                model.eval()
                with torch.no_grad():
                    z0 = model.encoder(x[init_idx])
                model.train(was)
                model.quantizer.kmeans_init(z0, kp["kmeans_iters"], gen)
            model.quantizer.initialized.fill_(True)

        usage = torch.zeros(levels, k, dtype=torch.long, device=device)
        res_buf: list[list[torch.Tensor]] = [[] for _ in range(levels)]
        sums = {"recon": 0.0, "quant": 0.0}
        for s in range(0, n, bs):
            xb = x[order[s : s + bs]]
            out = model(xb)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            if kp["codebook_update"] == "ema":
                model.quantizer.ema_update(out.residuals, out.codes)
            for level in range(levels):
                usage[level] += torch.bincount(out.codes[:, level], minlength=k)
                if kp["dead_code_reseed"]:
                    res_buf[level].append(out.residuals[level])
            sums["recon"] += float(out.recon_loss.detach()) * xb.shape[0]
            sums["quant"] += float(out.quant_loss.detach()) * xb.shape[0]
        train_seconds = time.perf_counter() - t0

        reseeded = [0] * levels
        if kp["dead_code_reseed"]:
            for level in range(levels):
                dead = torch.nonzero(usage[level] < kp["dead_code_threshold"]).squeeze(1)
                if dead.numel() == 0:
                    continue
                pool = torch.cat(res_buf[level])
                if pool.shape[0] >= dead.numel():
                    pick = torch.randperm(pool.shape[0], generator=gen)[: dead.numel()]
                else:
                    pick = torch.randint(pool.shape[0], (dead.numel(),), generator=gen)
                model.quantizer.reseed(level, dead, pool[pick.to(device)])
                reseeded[level] = int(dead.numel())
        del res_buf

        codes = _assign_all(model, x)
        row: dict[str, Any] = {
            "epoch": epoch,
            "recon_loss": sums["recon"] / n,
            "quant_loss": sums["quant"] / n,
            "loss": (sums["recon"] + sums["quant"]) / n,
        }
        row.update(code_metrics(codes, k))
        for level in range(levels):
            row[f"reseeded_l{level + 1}"] = reseeded[level]
        row["train_seconds"] = train_seconds
        row["seconds"] = time.perf_counter() - t0
        history.append(row)

        if epoch >= first_kept:
            save_torch(
                {**RQVAETokenizer.from_model(model, "cpu").state(), "epoch": epoch, "params_hash": phash}, _kept_dir(tokenizer_dir) / f"{kept_name(epoch)}.pt"
            )
        _write_history(history, history_path)
        save_torch(
            {
                "format": CHECKPOINT_FORMAT,
                "params_hash": phash,
                "epoch": epoch,
                "config": cfg.to_dict(),
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "generator": gen.get_state(),
                "torch_rng": _cpu_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(torch.device(device)) if device.startswith("cuda") else None,
                "history": history,
                "seconds": seconds_before + time.perf_counter() - t_run,
            },
            ckpt_path,
        )
        bar.set_postfix(recon=f"{row['recon_loss']:.4f}", use1=f"{row['usage_l1']:.2f}", coll=f"{row['collision_rate']:.3f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    bar.close()

    _clear_kept(tokenizer_dir, keep={kept_name(e) for e in range(max(first_kept, 1), tp.epochs + 1)})
    _write_history(history, history_path)  # also when a completed checkpoint made the loop empty
    summary = _summary("rqvae", tp, n, history[-1], len(history), seconds_before + time.perf_counter() - t_run, start)
    write_json(summary, metrics_path)
    return summary


def _summary(kind: str, tp: TokenizerParams, n: int, last: dict[str, Any], epochs: int, seconds: float, resumed_from: int) -> dict[str, Any]:
    lv = range(1, tp.levels + 1)
    out: dict[str, Any] = {"kind": kind, "items": n, "levels": tp.levels, "codebook_size": tp.codebook_size, "epochs": epochs}
    if "recon_loss" in last:
        out["recon_loss"] = last["recon_loss"]
        out["quant_loss"] = last["quant_loss"]
    if "quant_error" in last:
        out["quant_error"] = last["quant_error"]
    out["usage_share"] = {f"l{i}": last[f"usage_l{i}"] for i in lv}
    out["perplexity"] = {f"l{i}": last[f"perplexity_l{i}"] for i in lv}
    out["collision_rate"] = last["collision_rate"]
    out["seconds"] = round(seconds, 3)
    out["resumed_from_epoch"] = resumed_from
    return out


# --------------------------------------------------------------------------- PQ


def train_pq(
    vectors: np.ndarray,
    tp: TokenizerParams,
    seed: int,
    tokenizer_dir: str | Path,
    reports_dir: str | Path,
) -> dict[str, Any]:
    """Fit PQ (k-means per segment, ``kmeans_iters`` iterations) and write the same report files
    as RQ-VAE (history.csv has a single row, epoch 1) so dvc.yaml is the same for both kinds."""
    kp = resolved_kind_params(tp, "pq")
    tokenizer_dir, reports_dir = Path(tokenizer_dir), Path(reports_dir)
    t0 = time.perf_counter()
    seed_everything(seed)
    x_np = np.require(vectors, np.float32, ["C_CONTIGUOUS", "WRITEABLE"])
    tok = PQTokenizer.fit(x_np, tp.levels, tp.codebook_size, kp["kmeans_iters"], seed, resolve_device(tp.device))
    res = tok.quantize(x_np)
    recon = np.concatenate([tok.centroids[lv].cpu().numpy()[res.codes[:, lv]] for lv in range(tok.levels)], axis=1)
    row: dict[str, Any] = {"epoch": 1, "quant_error": float(((x_np - recon) ** 2).sum(1).mean())}
    row.update(code_metrics(res.codes, tp.codebook_size))
    row["seconds"] = time.perf_counter() - t0
    return write_one_shot("pq", tok, row, tp, x_np.shape[0], t0, tokenizer_dir, reports_dir)


def write_one_shot(
    kind: str, tok: SemanticTokenizer, row: dict[str, Any], tp: TokenizerParams, n: int, t0: float, tokenizer_dir: Path, reports_dir: Path
) -> dict[str, Any]:
    """Files of a tokenizer without epochs: kept/<kind>.pt alone, a one-row history.csv (epoch 1)
    and metrics.json, the same files RQ-VAE writes, so dvc.yaml is the same for every kind.
    ``row``: the history row (``epoch``, ``usage_l*``, ``perplexity_l*``, ``collision_rate``:
    ``code_stats.code_metrics``, ``seconds``); returns the summary written to metrics.json."""
    _clear_kept(tokenizer_dir)
    stale = tokenizer_dir / "last.pt"  # an RQ-VAE checkpoint does not describe this run
    if stale.exists():
        stale.unlink()
    save_torch(tok.state(), _kept_dir(tokenizer_dir) / f"{kind}.pt")
    _write_history([row], reports_dir / "history.csv")
    summary = _summary(kind, tp, n, row, 1, time.perf_counter() - t0, 0)
    write_json(summary, reports_dir / "metrics.json")
    return summary


# --------------------------------------------------------------------------- RQ-KMeans


def train_rqkmeans(
    vectors: np.ndarray,
    tp: TokenizerParams,
    seed: int,
    tokenizer_dir: str | Path,
    reports_dir: str | Path,
) -> dict[str, Any]:
    """Fit RQ-KMeans (SPEC section 9: k-means++ and ``kmeans_iters`` Lloyd iterations per level,
    on the residuals of the level before; ``normalize``) and write the same files as PQ.

    history.csv's single row has ``quant_error`` (mean squared residual after the last level) and
    ``residual_l1..L`` (the same after each level), plus the code health figures."""
    kp = resolved_kind_params(tp, "rqkmeans")
    tokenizer_dir, reports_dir = Path(tokenizer_dir), Path(reports_dir)
    t0 = time.perf_counter()
    seed_everything(seed)
    x_np = np.require(vectors, np.float32, ["C_CONTIGUOUS", "WRITEABLE"])
    tok = RQKMeansTokenizer.fit(x_np, tp.levels, tp.codebook_size, kp["kmeans_iters"], seed, kp["normalize"], resolve_device(tp.device))
    res = tok.quantize(x_np)
    errors = tok.residual_errors(x_np)
    row: dict[str, Any] = {"epoch": 1, "quant_error": errors[-1]}
    for level, err in enumerate(errors, start=1):
        row[f"residual_l{level}"] = err
    row.update(code_metrics(res.codes, tp.codebook_size))
    row["seconds"] = time.perf_counter() - t0
    return write_one_shot("rqkmeans", tok, row, tp, x_np.shape[0], t0, tokenizer_dir, reports_dir)
