"""Analyses of ranked recommendations (SPEC section 5; paper 001 Figures 2-3, Tables 6-7).

* ``head_tail_groups`` / ``head_tail_report``: Figure 3. The distinct items that are test targets
  are ranked by training interaction count (ties: ascending item id); the first ceil(n/2) are the
  head, the rest the tail; metrics are means over the users whose target is in each group.
* ``popularity_deciles`` / ``decile_report``: Figure 2. All catalogue items sorted by training
  count ascending (ties: ascending item id) and cut into 10 equal-size groups (decile 1 = rarest,
  10 = most popular; with many tied counts, equal counts can straddle a boundary, which keeps
  the groups equal-sized and the assignment deterministic). Per decile: ground-truth targets,
  top-1 and top-10 predictions.
* ``qualitative_markdown``: Table 7. Seeded users with their recent history, target and top-5.
* ``render_readme``: reports/README.md, every sentence and number built from the reports.

"Training interaction count" is ``genrec_core.evaluation.baselines.train_counts``: occurrences in
the users' ``train_items``, never validation or test targets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from genrec_core.evaluation.metrics import as_padded, hit_ndcg, metric_keys
from genrec_core.recommender.model_spec import MODEL_SPECS, canonical_model_name

METHOD_LABELS = {"model": "Generative model", "markov": "Markov chain (1st order)", "mostpop": "MostPop"}


def method_labels(model_kind: str) -> dict[str, str]:
    """Row labels of the analyse reports, the trained model's its ``ModelSpec.label`` (an
    unregistered name stands for itself)."""
    spec = MODEL_SPECS.get(canonical_model_name(model_kind))
    return {**METHOD_LABELS, "model": spec.label if spec else model_kind}


def _label(method: str, labels: Mapping[str, str] = METHOD_LABELS) -> str:
    return labels.get(method, method)


# --------------------------------------------------------------------------- head / tail (Figure 3)


def head_tail_groups(targets, counts: np.ndarray) -> dict:
    """Split the distinct target items into head (top ceil(n/2) by training count) and tail.

    Returns ``head_items``, ``tail_items`` (int arrays, popularity order) and ``is_head`` [U]
    (whether each user's target is a head item).
    """
    targets = np.asarray(targets, dtype=np.int64).ravel()
    counts = np.asarray(counts, dtype=np.int64)
    distinct = np.unique(targets)
    order = np.lexsort((distinct, -counts[distinct]))
    ranked = distinct[order]
    n_head = (ranked.size + 1) // 2
    head, tail = ranked[:n_head], ranked[n_head:]
    return {"head_items": head, "tail_items": tail, "is_head": np.isin(targets, head)}


def head_tail_report(ranks_by_method: Mapping[str, np.ndarray], targets, counts: np.ndarray, ks: Sequence[int]) -> dict:
    """JSON-ready head/tail report: group definitions and each method's metrics per group."""
    groups = head_tail_groups(targets, counts)
    is_head = groups["is_head"]
    counts = np.asarray(counts, dtype=np.int64)

    def describe(items: np.ndarray, mask: np.ndarray) -> dict:
        c = counts[items]
        return {
            "items": int(items.size),
            "users": int(mask.sum()),
            "min_train_count": int(c.min()) if c.size else 0,
            "max_train_count": int(c.max()) if c.size else 0,
        }

    report = {
        "definition": "distinct test-target items ranked by training interaction count (ties: item id); "
        "head = top ceil(n/2) items, tail = the rest; metrics over the users whose target is in the group",
        "groups": {"head": describe(groups["head_items"], is_head), "tail": describe(groups["tail_items"], ~is_head)},
        "metrics": {},
    }
    for method, ranks in ranks_by_method.items():
        ranks = np.asarray(ranks)
        report["metrics"][method] = {
            "head": hit_ndcg(ranks[is_head], ks),
            "tail": hit_ndcg(ranks[~is_head], ks),
        }
    return report


# --------------------------------------------------------------------------- deciles (Figure 2)


def popularity_deciles(counts: np.ndarray, item_ids=None, n_bins: int = 10) -> np.ndarray:
    """Decile (1 = rarest .. n_bins = most popular) of every item id, 0 for ids not in ``item_ids``."""
    counts = np.asarray(counts, dtype=np.int64)
    ids = np.arange(counts.size) if item_ids is None else np.asarray(item_ids, dtype=np.int64)
    order = ids[np.lexsort((ids, counts[ids]))]
    decile = np.zeros(counts.size, dtype=np.int64)
    decile[order] = np.arange(order.size) * n_bins // max(order.size, 1) + 1
    return decile


def _decile_counts(items: np.ndarray, decile: np.ndarray, n_bins: int) -> list[int]:
    items = np.asarray(items, dtype=np.int64).ravel()
    items = items[(items >= 0) & (items < decile.size)]
    d = decile[items]
    return np.bincount(d[d > 0], minlength=n_bins + 1)[1:].astype(int).tolist()


def decile_report(
    targets,
    lists_by_method: Mapping[str, np.ndarray],
    counts: np.ndarray,
    item_ids=None,
    n_bins: int = 10,
    top_ns: Sequence[int] = (1, 10),
) -> dict:
    """JSON-ready Figure 2: per decile, its items and count range, targets, top-n predictions."""
    counts = np.asarray(counts, dtype=np.int64)
    decile = popularity_deciles(counts, item_ids, n_bins)
    ids = np.arange(counts.size) if item_ids is None else np.asarray(item_ids, dtype=np.int64)
    bins = []
    for d in range(1, n_bins + 1):
        members = ids[decile[ids] == d]
        c = counts[members]
        bins.append(
            {
                "decile": d,
                "items": int(members.size),
                "min_train_count": int(c.min()) if c.size else 0,
                "max_train_count": int(c.max()) if c.size else 0,
            }
        )
    out = {
        "definition": f"all {ids.size} items sorted by training interaction count ascending (ties: item id), "
        f"cut into {n_bins} equal-size groups; decile 1 = rarest, {n_bins} = most popular",
        "deciles": bins,
        "targets": _decile_counts(targets, decile, n_bins),
        "predictions": {},
    }
    for method, lists in lists_by_method.items():
        mat = as_padded(lists)
        out["predictions"][method] = {f"top{n}": _decile_counts(mat[:, :n], decile, n_bins) for n in top_ns}
    return out


# --------------------------------------------------------------------------- plots


def _save(fig, path: Path) -> Path:
    from genrec_core.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def plot_head_tail(report: dict, path: Path, keys: Sequence[str], labels: Mapping[str, str] = METHOD_LABELS) -> Path:
    """Grouped bars like Figure 3: one panel per group, one bar per method for each metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(report["metrics"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(keys))
    for ax, group in zip(axes, ("head", "tail")):
        for i, m in enumerate(methods):
            vals = [report["metrics"][m][group][k] for k in keys]
            ax.bar(x + (i - (len(methods) - 1) / 2) * width, vals, width=width, label=_label(m, labels))
        g = report["groups"][group]
        ax.set_title(f"{group}: {g['items']} items, {g['users']} users")
        ax.set_xticks(x, [k.replace("hit", "Hit").replace("ndcg", "NDCG") for k in keys])
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_deciles(report: dict, path: Path, method: str = "model", labels: Mapping[str, str] = METHOD_LABELS) -> Path:
    """Shares per popularity decile like Figure 2: targets vs the method's top-1 and top-10."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def share(v: list[int]) -> np.ndarray:
        a = np.asarray(v, dtype=np.float64)
        return a / a.sum() if a.sum() else a

    series = [("ground-truth targets", report["targets"])]
    for name, vals in report["predictions"].get(method, {}).items():
        series.append((f"{_label(method, labels)} {name.replace('top', 'top-')}", vals))
    d = np.arange(1, len(report["targets"]) + 1)
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(8, 3.4))
    for i, (name, vals) in enumerate(series):
        ax.bar(d + (i - (len(series) - 1) / 2) * width, share(vals), width=width, label=f"{name} (n={sum(vals)})")
    ax.set_xticks(d)
    ax.set_xlabel("item popularity decile (training interactions; 1 = rarest)")
    ax.set_ylabel("share")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- markdown


def _num(x: float) -> str:
    return f"{round(x, 4) + 0.0:.4f}"


def _pct(x: float) -> str:
    return f"{round(100 * x, 2) + 0.0:.2f}%"


def _sentence(text: str) -> str:
    """A definition string as a Markdown paragraph: capitalised, full stop, blank line."""
    return text[:1].upper() + text[1:] + ".\n"


def _md_cell(text) -> str:
    return re.sub(r"\s+", " ", str(text)).replace("|", "\\|").strip()


def metrics_table(rows: Mapping[str, Mapping[str, float]], keys: Sequence[str], labels: Mapping[str, str] = METHOD_LABELS) -> list[str]:
    """Markdown table, one row per method, one column per metric key."""
    head = ["| Method | " + " | ".join(k.replace("hit", "Hit").replace("ndcg", "NDCG") for k in keys) + " |"]
    head.append("|---|" + "---:|" * len(keys))
    for method, vals in rows.items():
        head.append(f"| {_label(method, labels)} | " + " | ".join(_num(vals[k]) if k in vals else "–" for k in keys) + " |")
    return head


def head_tail_markdown(report: dict, keys: Sequence[str], labels: Mapping[str, str] = METHOD_LABELS) -> str:
    """Head/tail tables (Figure 3 as numbers)."""
    lines = [
        "# Head / tail (paper 001, Figure 3)\n",
        _sentence(report["definition"]),
        "| Group | items | users | training count range |",
        "|---|---:|---:|---|",
    ]
    for g in ("head", "tail"):
        d = report["groups"][g]
        lines.append(f"| {g} | {d['items']} | {d['users']} | {d['min_train_count']}..{d['max_train_count']} |")
    for g in ("head", "tail"):
        lines += ["", f"## {g.capitalize()}\n"]
        lines += metrics_table({m: v[g] for m, v in report["metrics"].items()}, keys, labels)
    return "\n".join(lines) + "\n"


def decile_markdown(report: dict, labels: Mapping[str, str] = METHOD_LABELS) -> list[str]:
    """Table of the decile report (counts per decile)."""
    cols = [("targets", report["targets"])]
    for m, per in report["predictions"].items():
        for n, vals in per.items():
            cols.append((f"{_label(m, labels)} {n.replace('top', 'top-')}", vals))
    lines = ["| Decile | items | training count | " + " | ".join(c for c, _ in cols) + " |", "|---:|---:|---|" + "---:|" * len(cols)]
    for i, b in enumerate(report["deciles"]):
        lines.append(f"| {b['decile']} | {b['items']} | {b['min_train_count']}..{b['max_train_count']} | " + " | ".join(str(v[i]) for _, v in cols) + " |")
    return lines


def item_titles(items: pl.DataFrame) -> dict[int, str]:
    """Display text of each item: ``title`` when present and non-empty, else its source id."""
    ids = items["item_id"].to_list()
    source = items["source_item_id"].cast(pl.String).to_list() if "source_item_id" in items.columns else [str(i) for i in ids]
    titles = items["title"].cast(pl.String).to_list() if "title" in items.columns else [None] * len(ids)
    return {int(i): (t if t and t.strip() else f"item {s}") for i, t, s in zip(ids, titles, source)}


def pick_examples(ranks: np.ndarray, n: int, seed: int, hit_k: int = 5) -> np.ndarray:
    """Row indices of ``n`` users: up to half with the target in the top ``hit_k``, seeded."""
    rng = np.random.default_rng(seed)
    ranks = np.asarray(ranks)
    hits = np.flatnonzero((ranks >= 1) & (ranks <= hit_k))
    misses = np.flatnonzero(~((ranks >= 1) & (ranks <= hit_k)))
    n_hit = min(hits.size, max(n // 2, n - misses.size))
    chosen = list(rng.choice(hits, n_hit, replace=False)) if n_hit else []
    n_miss = min(misses.size, n - n_hit)
    chosen += list(rng.choice(misses, n_miss, replace=False)) if n_miss else []
    return np.array(sorted(chosen), dtype=np.int64)


def qualitative_markdown(
    rows: np.ndarray,
    user_ids,
    histories: Sequence[Sequence[int]],
    targets,
    lists_by_method: Mapping[str, np.ndarray],
    titles: Mapping[int, str],
    codes_lookup=None,
    top: int = 5,
    history_len: int = 5,
    labels: Mapping[str, str] = METHOD_LABELS,
) -> str:
    """Table 7 style: for each chosen user, last history items, target, each method's top list.

    ``codes_lookup(item_ids) -> [n, L]`` (optional) adds how many leading ID tokens each
    prediction shares with the target, a hint of semantic closeness beyond exact hits.
    """
    targets = np.asarray(targets, dtype=np.int64)
    user_ids = np.asarray(user_ids)
    mats = {m: as_padded(v) for m, v in lists_by_method.items()}
    lines = [
        "# Qualitative examples (paper 001, Table 7)\n",
        f"Users drawn with a fixed seed, up to half of them with the generative model's hit in the top {top}. "
        f"**Bold** = the target item; [p/L] = leading semantic-ID tokens shared with the target.\n",
    ]
    for r in rows:
        t = int(targets[r])
        hist = list(histories[r])[-history_len:]
        lines.append(f"## User {int(user_ids[r])}\n")
        lines.append(f"History (last {len(hist)}, oldest first): " + " → ".join(_md_cell(titles.get(int(i), f"item {i}")) for i in hist) + "\n")
        lines.append(f"Target: **{_md_cell(titles.get(t, f'item {t}'))}**\n")
        statuses = []
        for m, mat in mats.items():
            ranked = mat[r, :]
            where = np.flatnonzero(ranked == t)
            statuses.append(
                f"{_label(m, labels)}: " + (f"hit at rank {int(where[0]) + 1}" if where.size else f"target not in its top {int((ranked >= 0).sum())}")
            )
        lines.append("; ".join(statuses) + ".\n")
        lines.append("| Rank | " + " | ".join(_label(m, labels) for m in mats) + " |")
        lines.append("|---:|" + "---|" * len(mats))
        t_codes = None if codes_lookup is None else codes_lookup(np.array([t]))[0]
        for j in range(top):
            cells = []
            for mat in mats.values():
                item = int(mat[r, j]) if j < mat.shape[1] else -1
                if item < 0:
                    cells.append("")
                    continue
                text = _md_cell(titles.get(item, f"item {item}"))
                if item == t:
                    text = f"**{text}**"
                if t_codes is not None:
                    c = codes_lookup(np.array([item]))[0]
                    shared = int(np.logical_and.accumulate(c == t_codes).sum())
                    text += f" [{shared}/{t_codes.size}]"
                cells.append(text)
            lines.append(f"| {j + 1} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def compare_sentence(model: Mapping[str, float], floor: Mapping[str, float], keys: Sequence[str], floor_name: str, main_key: str) -> str:
    """Where the model stands against a floor, worded from the numbers."""
    wins = [k for k in keys if model[k] > floor[k]]
    ties = [k for k in keys if model[k] == floor[k]]
    a, b = model[main_key], floor[main_key]
    if a > b:
        rel = f"{_pct((a - b) / b)} above" if b > 0 else "above"
        where = f"above the {floor_name} ({rel})"
    elif a < b:
        rel = f"{_pct((b - a) / b)} below" if b > 0 else "below"
        where = f"below the {floor_name} ({rel})"
    else:
        where = f"equal to the {floor_name}"
    pretty = main_key.replace("hit", "Hit").replace("ndcg", "NDCG")
    return (
        f"On {pretty} the generative model scores {_num(a)} against {_num(b)}: {where}. "
        f"It is higher on {len(wins)} of {len(keys)} metrics"
        + (f", equal on {len(ties)}" if ties else "")
        + (f" and lower on {len(keys) - len(wins) - len(ties)}." if len(keys) - len(wins) - len(ties) else ".")
    )


def demote_headings(markdown: str, levels: int = 1) -> str:
    """Push every Markdown heading down ``levels`` so an included report nests under ours."""
    return re.sub(r"(?m)^(#{1,5}) ", lambda m: "#" * (len(m.group(1)) + levels) + " ", markdown)


def render_readme(
    *,
    dataset: str,
    model_metrics: Mapping[str, float],
    baseline_metrics: Mapping[str, Mapping[str, float]],
    ks: Sequence[int],
    n_users: int,
    beam_size: int,
    relaxed: Mapping[str, Mapping[str, float]] | None,
    head_tail: dict,
    deciles: dict,
    examples_md: str,
    data_stats_md: str | None,
    id_analysis_md: str | None,
    id_pngs: Sequence[str] = (),
    analysis_pngs: Mapping[str, str] | None = None,
    labels: Mapping[str, str] = METHOD_LABELS,
) -> str:
    """reports/README.md: results tables, head/tail, deciles, examples, data and ID reports."""
    keys = metric_keys(ks)
    rows = {"model": model_metrics, **baseline_metrics}
    main_k = 10 if 10 in ks else max(ks)
    lines = [
        "# Results\n",
        f"Dataset `{dataset}`, test split, {n_users} users, leave-one-out, full ranking over all items; "
        f"the generative model ranks the {beam_size} beams of a constrained beam search, the baselines "
        f"their top {beam_size}. A target missing from a list scores 0.\n",
        "## Test metrics\n",
        *metrics_table(rows, keys, labels),
        "",
    ]
    if "markov" in baseline_metrics:
        lines.append(compare_sentence(model_metrics, baseline_metrics["markov"], keys, "Markov-chain floor", f"ndcg@{main_k}") + "\n")
    if "mostpop" in baseline_metrics:
        lines.append(compare_sentence(model_metrics, baseline_metrics["mostpop"], keys, "MostPop floor", f"ndcg@{main_k}") + "\n")
    lines.append(
        "MostPop ranks items by their count in the users' training parts; the Markov chain ranks the items that "
        "followed the last history item by transition count (transitions from the training parts and, for test, "
        "the validation item), backing off to MostPop. Neither excludes history items.\n"
    )
    if relaxed:
        rkeys = list(next(iter(relaxed.values())))
        lines += [
            "## Relaxed prefix match (paper 001, Table 6)\n",
            "NDCG@5 where a ranked item counts as a hit when its first k ID tokens equal the target's (k = L is the exact ID).\n",
        ]
        levels = [re.match(r"prefix(\d+)_", k).group(1) for k in rkeys]
        lines.append("| Method | " + " | ".join(f"k={lv}" for lv in levels) + " |")
        lines.append("|---|" + "---:|" * len(rkeys))
        for m, vals in relaxed.items():
            lines.append(f"| {_label(m, labels)} | " + " | ".join(_num(vals[k]) for k in rkeys) + " |")
        lines.append("")
    pngs = dict(analysis_pngs or {})
    ht_keys = [k for k in keys if k.endswith(("@5", "@10"))] or keys
    lines += ["## Head / tail items (paper 001, Figure 3)\n", _sentence(head_tail["definition"])]
    for g in ("head", "tail"):
        d = head_tail["groups"][g]
        lines.append(f"**{g.capitalize()}** ({d['items']} items, {d['users']} users, training count {d['min_train_count']}..{d['max_train_count']})\n")
        lines += metrics_table({m: v[g] for m, v in head_tail["metrics"].items()}, ht_keys, labels)
        lines.append("")
    if "head_tail" in pngs:
        lines.append(f"![head/tail metrics]({pngs['head_tail']})\n")
    lines += ["## Popularity deciles (paper 001, Figure 2)\n", _sentence(deciles["definition"]), *decile_markdown(deciles, labels), ""]
    if "deciles" in pngs:
        lines.append(f"![popularity deciles]({pngs['deciles']})\n")
    lines.append(demote_headings(examples_md))
    if data_stats_md:
        lines += ["## Data statistics\n", data_stats_md.strip(), ""]
    if id_analysis_md or id_pngs:
        lines.append("## Semantic IDs\n")
        if id_analysis_md:
            lines.append(demote_headings(id_analysis_md, 2))
        for p in id_pngs:
            lines.append(f"![{Path(p).stem}]({p})\n")
    return "\n".join(lines).rstrip() + "\n"
