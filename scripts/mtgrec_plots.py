"""MTGRec's figures in reports/mtgrec/ (issue 12): thin wrappers over tested computations.

    # p and cumulative influence per tokenizer per stage end (a finished mtgrec train stage)
    python scripts/mtgrec_plots.py influence --csv reports/method/influence.csv --out reports/mtgrec/influence.png
    # paper 002 Figure 5: Hit@10 gain over TIGER by item-frequency group (two evaluate outputs)
    python scripts/mtgrec_plots.py long-tail --method MTGREC_WS/data/predictions/test.parquet \\
        --baseline TIGER_WS/data/predictions/test.parquet --out reports/mtgrec/long_tail

``long-tail`` groups items by training count from ``--sequences`` (default
data/processed/sequences.parquet; ``genrec_core.analysis.long_tail``) and writes ``<out>.csv``
(the table) and ``<out>.png`` (bars: test users per group; line: the gain).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_influence(csv: Path, out: Path) -> None:
    """Two panels over stage ends: p and cumulative influence, one line per tokenizer."""
    import polars as pl

    df = pl.read_csv(csv)
    if df.height == 0:
        raise SystemExit(f"{csv}: no stage ends (header only: not an mtgrec run, or no stage ended)")
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for (t,), part in df.sort("stage").group_by(["tokenizer"], maintain_order=True):
        for ax, col in zip(axes, ("p", "cumulative")):
            ax.plot(part["stage"], part[col], marker="o", label=f"tokenizer {t}")
    axes[0].set_ylabel("sampling probability p")
    axes[1].set_ylabel("cumulative influence")
    for ax in axes:
        ax.set_xlabel("stage end")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_long_tail(rows: list[dict], k: int, out: Path) -> None:
    """Bars: test users per group; line (right axis): relative Hit@k gain over the baseline."""
    plt = _pyplot()
    labels = [f"{r['min_train_count']}-{r['max_train_count']}" for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar(x, [r["test_users"] for r in rows], color="#bbb")
    ax.set_xticks(list(x), labels)
    ax.set_xlabel("item group (training interactions, rarest first)")
    ax.set_ylabel("test users")
    ax2 = ax.twinx()
    ax2.plot(list(x), [100 * r["gain"] for r in rows], marker="o", color="C3")
    ax2.axhline(0, color="C3", lw=0.5)
    ax2.set_ylabel(f"Hit@{k} gain over baseline (%)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    a = sub.add_parser("influence")
    a.add_argument("--csv", type=Path, default=Path("reports/method/influence.csv"))
    a.add_argument("--out", type=Path, default=Path("reports/mtgrec/influence.png"))
    b = sub.add_parser("long-tail")
    b.add_argument("--method", type=Path, required=True, help="MTGRec's data/predictions/test.parquet")
    b.add_argument("--baseline", type=Path, required=True, help="TIGER's data/predictions/test.parquet")
    b.add_argument("--sequences", type=Path, default=Path("data/processed/sequences.parquet"))
    b.add_argument("--items", type=Path, default=Path("data/processed/items.parquet"))
    b.add_argument("--num-items", type=int, default=0, help="catalogue size (0: from --items)")
    b.add_argument("--groups", type=int, default=5)
    b.add_argument("--k", type=int, default=10)
    b.add_argument("--out", type=Path, default=Path("reports/mtgrec/long_tail"))
    args = ap.parse_args(argv)

    if args.what == "influence":
        plot_influence(args.csv, args.out)
        print(f"wrote {args.out}")
        return 0
    import polars as pl

    from genrec_core.analysis.long_tail import long_tail_gain
    from genrec_core.evaluation.baselines import train_counts

    n_items = args.num_items or int(pl.read_parquet(args.items)["item_id"].max()) + 1
    counts = train_counts(pl.read_parquet(args.sequences)["train_items"], n_items)
    rows = long_tail_gain(pl.read_parquet(args.method), pl.read_parquet(args.baseline), counts, args.groups, args.k)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_csv(f"{args.out}.csv")
    plot_long_tail(rows, args.k, Path(f"{args.out}.png"))
    print(f"wrote {args.out}.csv, {args.out}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
