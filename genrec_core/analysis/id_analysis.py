"""Analyses of semantic-ID tables (SPEC section 3, "Analyses").

* ``filtered_share``: paper 001 Table 1, how much of the candidate set each token prunes.
* ``purity_gains``: paper 001 Figure 1, how much each token raises prefix purity.
* ``codebook_usage``: share of codes used and perplexity per level (collapse check).
* ``change_shares``: MTGRec Table 5, how many items' IDs change between tokenizers t epochs apart.
* ``transition_information``: how much of the next item's code a user's current item's code tells
  (mutual information over training transitions): IDs quantised from text can carry none of the
  sequential signal a recommender must learn, IDs built from co-occurrence carry some.

All functions take IDs as int arrays [N, L] (row = item) and do not require the IDs to be unique,
so they apply to raw codes as well as to final IDs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from genrec_core.tokenizers.collisions import group_ids
from genrec_core.tokenizers.id_table import is_seed_run, sort_tokenizer_names, tokenizer_epoch


def _prefix_groups(ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Group of each item by its first k tokens, and group sizes (k = 0: one group of all)."""
    return group_ids(np.ascontiguousarray(ids[:, :k]))


def filtered_share(ids: np.ndarray) -> list[float]:
    """Per level k = 1..L: mean over items of 1 - |items sharing k-prefix| / |items sharing (k-1)-prefix|.

    The (k-1)-prefix of level 1 is empty, so the candidates before the first token are all N items.
    Items are weighted uniformly.
    """
    ids = np.asarray(ids)
    n, n_levels = ids.shape
    out = []
    gid, sizes = _prefix_groups(ids, 0)
    before = sizes[gid].astype(np.float64)
    for k in range(1, n_levels + 1):
        gid, sizes = _prefix_groups(ids, k)
        after = sizes[gid].astype(np.float64)
        out.append(float(np.mean(1.0 - after / before)) if n else 0.0)
        before = after
    return out


def _group_purity(gid: np.ndarray, sizes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Purity 1 - H/log(n) of each group, H = entropy of its items' normalised frequencies.

    Conventions: a group of one item has purity 1 (the prefix already names the item, and H/log 1
    is 0/0); a group whose items all have frequency 0 is treated as uniform (purity 0); items with
    frequency 0 contribute 0 to H (0 log 0 = 0).
    """
    n_groups = sizes.size
    totals = np.bincount(gid, weights=counts, minlength=n_groups)
    p = np.divide(counts, totals[gid], out=np.zeros_like(counts), where=totals[gid] > 0)
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    entropy = -np.bincount(gid, weights=plogp, minlength=n_groups)
    log_n = np.log(sizes.astype(np.float64))
    purity = np.ones(n_groups, dtype=np.float64)
    multi = sizes > 1
    purity[multi] = 1.0 - entropy[multi] / log_n[multi]
    purity[multi & (totals <= 0)] = 0.0
    return purity


def purity_gains(ids: np.ndarray, item_counts: np.ndarray | None = None) -> np.ndarray:
    """Gain [N, L]: purity(k-prefix of the item) - purity((k-1)-prefix), purity as ``_group_purity``.

    ``item_counts``: training frequency of each item (row order of ``ids``); None = uniform, in
    which case every group of n > 1 items has purity 0 and only reaching a single item gains.
    Gains can be negative: a token can leave a less skewed (less pure) set of items.
    """
    ids = np.asarray(ids)
    n, n_levels = ids.shape
    counts = np.ones(n, dtype=np.float64) if item_counts is None else np.asarray(item_counts, dtype=np.float64)
    if counts.shape != (n,):
        raise ValueError(f"item_counts must have one entry per item ({n}), got shape {counts.shape}")
    if (counts < 0).any():
        raise ValueError("item_counts must be non-negative")
    gains = np.zeros((n, n_levels), dtype=np.float64)
    gid, sizes = _prefix_groups(ids, 0)
    prev = _group_purity(gid, sizes, counts)[gid]
    for k in range(1, n_levels + 1):
        gid, sizes = _prefix_groups(ids, k)
        cur = _group_purity(gid, sizes, counts)[gid]
        gains[:, k - 1] = cur - prev
        prev = cur
    return gains


def token_mean_gains(ids: np.ndarray, gains: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
    """Figure 1's quantity for one level (0-based): (token values, mean gain over the items holding it)."""
    tokens, inverse = np.unique(np.asarray(ids)[:, level], return_inverse=True)
    sums = np.bincount(inverse, weights=gains[:, level], minlength=tokens.size)
    return tokens, sums / np.bincount(inverse, minlength=tokens.size)


def _summary(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {"count": 0}
    q = np.quantile(values, [0.1, 0.5, 0.9])
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "p10": float(q[0]),
        "median": float(q[1]),
        "p90": float(q[2]),
        "max": float(values.max()),
    }


def purity_gain_summary(ids: np.ndarray, item_counts: np.ndarray | None = None) -> dict:
    """Per level: stats of per-item gains and of per-token mean gains (Figure 1), with the raw
    per-token means (for the histograms)."""
    gains = purity_gains(ids, item_counts)
    levels = []
    for k in range(gains.shape[1]):
        tokens, means = token_mean_gains(ids, gains, k)
        levels.append(
            {
                "level": k + 1,
                "per_item": _summary(gains[:, k]),
                "per_token": _summary(means),
                "token_mean_gain": {int(t): float(m) for t, m in zip(tokens, means)},
            }
        )
    return {"frequencies": "uniform" if item_counts is None else "item_counts", "levels": levels}


def codebook_usage(ids: np.ndarray, codebook_sizes: int | Sequence[int | None]) -> list[dict]:
    """Per level: codes used, share of the K codes used, perplexity exp(H) of the code distribution
    over items, and perplexity / K. A size of None means the level's vocabulary is max code + 1
    (the dedup level)."""
    ids = np.asarray(ids)
    n, n_levels = ids.shape
    sizes = [codebook_sizes] * n_levels if isinstance(codebook_sizes, int) else list(codebook_sizes)
    if len(sizes) != n_levels:
        raise ValueError(f"need one codebook size per level ({n_levels}), got {len(sizes)}")
    out = []
    for k in range(n_levels):
        col = ids[:, k]
        size = int(sizes[k]) if sizes[k] is not None else int(col.max()) + 1
        freq = np.bincount(col, minlength=size).astype(np.float64)
        p = freq[freq > 0] / n
        perplexity = float(np.exp(-(p * np.log(p)).sum()))
        used = int((freq > 0).sum())
        out.append(
            {
                "level": k + 1,
                "codebook_size": size,
                "used": used,
                "used_share": used / size,
                "perplexity": perplexity,
                "perplexity_share": perplexity / size,
            }
        )
    return out


def _entropy_bits(values: np.ndarray) -> float:
    """Plug-in entropy in bits of the empirical distribution of ``values``."""
    _, counts = np.unique(values, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _plugin_mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in I(A; B) in bits of paired non-negative integer samples."""
    joint = a.astype(np.int64) * (int(b.max()) + 1) + b.astype(np.int64)
    return _entropy_bits(a) + _entropy_bits(b) - _entropy_bits(joint)


def transition_information(ids: np.ndarray, pairs: np.ndarray, seed: int = 0) -> list[dict]:
    """Per level l: what the code of a transition's source item says about its target's code.

    ``pairs`` [M, 2] holds (current item, next item) rows, e.g. consecutive training items. For
    level l, the prefixes c_<=l of both items are compared: ``same_prefix`` is the share of
    transitions that stay inside the source's prefix group, ``mutual_information`` the plug-in
    I(c_<=l(next); c_<=l(cur)) in bits, ``shuffled`` the same with the targets permuted (the
    plug-in estimate's bias on this many pairs and groups, seeded), and ``information_share`` the
    excess (MI - shuffled) over H(c_<=l(next)): 0 = the code is noise for the next item, 1 = it
    determines it."""
    ids = np.asarray(ids)
    pairs = np.asarray(pairs, dtype=np.int64)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or len(pairs) == 0:
        raise ValueError(f"pairs must be a non-empty [M, 2] array of item indices, got shape {pairs.shape}")
    rng = np.random.default_rng(seed)
    shuffled_next = rng.permutation(pairs[:, 1])
    out = []
    for level in range(1, ids.shape[1] + 1):
        gid, _ = _prefix_groups(ids, level)
        cur, nxt, shuf = gid[pairs[:, 0]], gid[pairs[:, 1]], gid[shuffled_next]
        h_next = _entropy_bits(nxt)
        mi = _plugin_mutual_information(cur, nxt)
        mi_shuffled = _plugin_mutual_information(cur, shuf)
        out.append(
            {
                "level": level,
                "same_prefix": float((cur == nxt).mean()),
                "same_prefix_shuffled": float((cur == shuf).mean()),
                "entropy_next": h_next,
                "mutual_information": mi,
                "shuffled": mi_shuffled,
                "information_share": (mi - mi_shuffled) / h_next if h_next > 0 else 0.0,
            }
        )
    return out


def default_intervals(max_span: int) -> list[int]:
    """1, 5, 10, 15, ... up to ``max_span`` (MTGRec Table 5 uses 1, 5, 10, 20, 30)."""
    return [t for t in [1, *range(5, max_span + 1, 5)] if t <= max_span]


def change_shares(tables: Mapping[str, np.ndarray], intervals: Sequence[int] | None = None) -> list[dict]:
    """MTGRec Table 5: for tokenizers t epochs apart, share of items whose first token / any token differs.

    ``tables``: {name: IDs [N, L']} with names ending in the epoch (``epoch_0200``); every pair at
    exactly t epochs apart contributes, and the shares are averaged over those pairs. Intervals
    with no such pair are left out. Rows of all tables must be the same items in the same order.
    Final tokenizers of independently seeded runs (``seed_0042``, ``tokenizer.kept_from: seeds``)
    are not epochs of one run, and their number is a seed: no rows.
    """
    names = sort_tokenizer_names(list(tables))
    if any(is_seed_run(n) for n in names):
        return []  # independent RQ-VAE runs (tokenizer.kept_from: seeds): no epochs apart to measure
    epochs = [tokenizer_epoch(n) for n in names]
    if any(e is None for e in epochs):
        epochs = list(range(len(names)))  # no epochs in the names: consecutive positions
    shapes = {np.asarray(tables[n]).shape for n in names}
    if len(shapes) > 1:
        raise ValueError(f"all tokenizers must give IDs of the same shape, got {sorted(shapes)}")
    span = max(epochs) - min(epochs) if epochs else 0
    wanted = default_intervals(span) if intervals is None else list(intervals)
    rows = []
    for t in wanted:
        first, anyc, pairs = [], [], []
        for i, a in enumerate(names):
            for j, b in enumerate(names):
                if epochs[j] - epochs[i] != t:
                    continue
                x, y = np.asarray(tables[a]), np.asarray(tables[b])
                first.append(float((x[:, 0] != y[:, 0]).mean()))
                anyc.append(float(np.any(x != y, axis=1).mean()))
                pairs.append([a, b])
        if pairs:
            rows.append({"interval": int(t), "pairs": len(pairs), "first_changed": float(np.mean(first)), "any_changed": float(np.mean(anyc))})
    return rows


def train_item_counts(processed_dir: Path, item_ids: np.ndarray) -> np.ndarray | None:
    """Training-interaction count of each of ``item_ids``, or None (= uniform) when unknown.

    Purity (Figure 1) is over item frequencies, and only the training part may be used so the
    analysis never sees validation/test targets. Sources, first found wins:
    1. ``sequences.parquet`` with a list column ``train_items``: count its items;
    2. ``sequences.parquet`` with a list column ``items`` (whole time-ordered sequence): count
       ``items[:-2]`` (leave-one-out: the last two are the validation and test targets);
    3. ``train.parquet`` (``user_id``, ``history``, ``target``): a user's training part is the
       history of their first example (the row with the shortest history, first in file order:
       one item) plus all their targets.
    Items never seen count 0.
    """
    seq_path = processed_dir / "sequences.parquet"
    train_path = processed_dir / "train.parquet"
    items: pl.Series | None = None
    if seq_path.exists():
        seq = pl.read_parquet(seq_path)
        if "train_items" in seq.columns:
            items = seq["train_items"].explode()
        elif "items" in seq.columns and isinstance(seq.schema["items"], pl.List):
            items = seq.select(pl.col("items").list.head(pl.col("items").list.len() - 2)).to_series().explode()
    if items is None and train_path.exists():
        ex = pl.read_parquet(train_path, columns=["user_id", "history", "target"]).with_row_index("_row")
        first = ex.with_columns(pl.col("history").list.len().alias("_len")).sort(["user_id", "_len", "_row"]).group_by("user_id", maintain_order=True).first()
        items = pl.concat([first["history"].list.first().cast(pl.Int64), ex["target"].cast(pl.Int64)])
    if items is None:
        return None
    items = items.drop_nulls().cast(pl.Int64)
    vc = items.value_counts()
    vc = vc.sort(vc.columns[0])
    keys = vc[vc.columns[0]].to_numpy().astype(np.int64)
    cnts = vc["count"].to_numpy().astype(np.float64)
    wanted = np.asarray(item_ids, dtype=np.int64)
    if keys.size == 0:
        return np.zeros(wanted.size, dtype=np.float64)
    pos = np.minimum(np.searchsorted(keys, wanted), keys.size - 1)
    return np.where(keys[pos] == wanted, cnts[pos], 0.0)


# --------------------------------------------------------------------------- rendering


def _pct(x: float) -> str:
    return f"{round(100 * x, 2) + 0.0:.2f}%"


def _num(x: float) -> str:
    return f"{round(x, 4) + 0.0:.4f}"  # + 0.0 turns -0.0 into 0.0


def render_markdown(report: dict) -> str:
    """Markdown tables of the analysis JSON (``build_report``'s output)."""
    lines = [
        "# Semantic-ID analysis\n",
        f"Reference tokenizer: `{report['reference_tokenizer']}` ({report['n_items']} items, {report['id_length']} tokens per ID, collision handling "
        f"`{report['collision']}`).\n",
    ]
    fs = report["filtered_share"]
    lines += [
        "## Candidates filtered out per token (paper 001, Table 1)\n",
        "| " + " | ".join(f"Layer-{k + 1}" for k in range(len(fs))) + " |",
        "|" + "---|" * len(fs),
        "| " + " | ".join(_pct(v) for v in fs) + " |",
        "",
    ]
    pg = report["purity_gain"]
    lines += [
        f"## Purity gain per token (paper 001, Figure 1; frequencies: {pg['frequencies']})\n",
        "| Level | mean per item | mean per token | median per token | p90 per token | max per token |",
        "|---|---|---|---|---|---|",
    ]
    for lv in pg["levels"]:
        t = lv["per_token"]
        lines.append(
            f"| {lv['level']} | {_num(lv['per_item'].get('mean', 0))} | {_num(t.get('mean', 0))} | {_num(t.get('median', 0))} | {_num(t.get('p90', 0))} "
            f"| {_num(t.get('max', 0))} |"
        )
    lines += ["", "## Codebook usage\n", "| Level | K | used | used share | perplexity | perplexity / K |", "|---|---|---|---|---|---|"]
    for u in report["codebook_usage"]:
        lines.append(f"| {u['level']} | {u['codebook_size']} | {u['used']} | {_pct(u['used_share'])} | {u['perplexity']:.2f} | {_pct(u['perplexity_share'])} |")
    lines += ["", f"## ID changes between tokenizers t epochs apart (MTGRec Table 5; {len(report['tokenizers'])} kept tokenizers)\n"]
    if report["change_shares"]:
        lines += ["| Interval | pairs | First | Any |", "|---|---|---|---|"]
        for r in report["change_shares"]:
            lines.append(f"| {r['interval']} | {r['pairs']} | {_pct(r['first_changed'])} | {_pct(r['any_changed'])} |")
    else:
        lines.append(
            "Only one kept tokenizer, tokenizers of independently seeded runs (`tokenizer.kept_from: seeds`), or no pair at 1, 5, 10, ... epochs "
            "apart: nothing to compare."
        )
    return "\n".join(lines) + "\n"


def save_plots(report: dict, out_dir: Path) -> list[Path]:
    """purity_gain.png (per-level histograms of per-token mean gains) and codebook_usage.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genrec_core.io import atomic_path

    written = []
    levels = report["purity_gain"]["levels"]
    fig, axes = plt.subplots(1, len(levels), figsize=(3.2 * len(levels), 2.8), squeeze=False)
    for ax, lv in zip(axes[0], levels):
        values = np.array(list(lv["token_mean_gain"].values()), dtype=np.float64)
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if hi - lo < 1e-6:  # all tokens (nearly) equal: widen so the bins are finite
            lo, hi = lo - 0.05, hi + 0.05
        ax.hist(values, bins=30, range=(lo, hi), color="tab:blue")
        ax.set_title(f"level {lv['level']}")
        ax.set_xlabel("mean purity gain per token")
    axes[0][0].set_ylabel("tokens")
    fig.tight_layout()
    with atomic_path(out_dir / "purity_gain.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    written.append(out_dir / "purity_gain.png")

    usage = report["codebook_usage"]
    x = np.arange(len(usage))
    fig, ax = plt.subplots(figsize=(1.2 * len(usage) + 2.5, 2.8))
    ax.bar(x - 0.2, [u["used_share"] for u in usage], width=0.4, label="codes used / K")
    ax.bar(x + 0.2, [u["perplexity_share"] for u in usage], width=0.4, label="perplexity / K")
    ax.set_xticks(x, [f"level {u['level']}" for u in usage])
    ax.set_ylim(0, 1.3)
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    fig.tight_layout()
    with atomic_path(out_dir / "codebook_usage.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    written.append(out_dir / "codebook_usage.png")
    return written


def build_report(
    tables: Mapping[str, np.ndarray],
    codebook_size: int,
    levels: int,
    item_counts: np.ndarray | None = None,
    collision: str = "",
) -> dict:
    """All four analyses. (a)-(c) use the latest kept tokenizer (the one a single-ID model would
    use); (d) compares all of them. Levels past ``levels`` (the dedup level) get vocabulary
    max code + 1 in the usage table."""
    names = sort_tokenizer_names(list(tables))
    ref = names[-1]
    ids = np.asarray(tables[ref])
    sizes = [codebook_size if k < levels else None for k in range(ids.shape[1])]
    return {
        "reference_tokenizer": ref,
        "tokenizers": names,
        "n_items": int(ids.shape[0]),
        "id_length": int(ids.shape[1]),
        "collision": collision,
        "filtered_share": filtered_share(ids),
        "purity_gain": purity_gain_summary(ids, item_counts),
        "codebook_usage": codebook_usage(ids, sizes),
        "change_shares": change_shares(tables),
    }
