"""Write a synthetic Amazon Reviews 2023 category, to benchmark preprocessing at real scale.

The real large categories (tens of millions of reviews) cannot be shipped, so this writes files
in the published format (every review and meta field, realistic text lengths, mixed-type meta
fields) with Zipf-like item popularity and heavy-tailed user activity, so that five-core
filtering keeps a large share, as on the real data. Everything is vectorised (numpy + polars,
written in chunks) and deterministic for a given seed.

    python benchmarks/make_synthetic_amazon.py OUT_DIR --interactions 10000000 --category Synthetic
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

_WORDS = (
    "great sound quality guitar string cable strap tuner pedal amp bass drum stick case stand "
    "price shipping fast works perfectly broke after month would buy again recommend good bad "
    "cheap sturdy light heavy easy install sounds warm bright noise hum volume knob battery "
    "gift son daughter beginner professional gig studio practice stage fits well poor value "
    "excellent love it not worth the money returned item arrived damaged packaging nice and"
).split()
_CATEGORY_TREE = [
    ["Musical Instruments", "Guitars", "Electric Guitars"],
    ["Musical Instruments", "Instrument Accessories", "Guitar & Bass Accessories", "Strings"],
    ["Musical Instruments", "Instrument Accessories", "Cables"],
    ["Musical Instruments", "Drums & Percussion", "Drum Sticks"],
    ["Musical Instruments", "Amplifiers & Effects", "Guitar Effects", "Pedals"],
    ["Musical Instruments", "Studio Recording Equipment", "Microphones"],
    [],
]


@dataclass
class Synthetic:
    reviews: Path
    meta: Path
    interactions: int
    users: int
    items: int
    seconds: float


def _pool(rng: np.random.Generator, mean_len: float, sigma: float, size: int = 20_000) -> pl.Series:
    """Random word strings with log-normal lengths (in characters); rows draw from the pool."""
    lengths = np.clip(rng.lognormal(np.log(mean_len), sigma, size), 1, 20 * mean_len).astype(np.int64)
    words = np.array(_WORDS)[rng.integers(0, len(_WORDS), int(lengths.sum() // 4) + size)]
    text = " ".join(words.tolist())
    starts = rng.integers(0, len(text) - lengths.max() - 1, size)
    # Only ``size`` strings are built in Python; the millions of rows gather from them.
    return pl.Series([text[a : a + n].strip() or "ok" for a, n in zip(starts.tolist(), lengths.tolist())], dtype=pl.String)


def _draw(pool: pl.Series, rng: np.random.Generator, n: int) -> pl.Series:
    return pool.gather(rng.integers(0, len(pool), n))


def _ids(prefix: str, numbers: np.ndarray, width: int, rng: np.random.Generator) -> pl.Series:
    """Amazon-looking ids: prefix + 6 base-36 digits of a scrambled number (unique) + random digits."""
    digits = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    x = (numbers.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(36**6)  # odd multiplier: a bijection mod 36^6 for < 2^31 ids
    columns = {}
    for i in range(width):
        if i < 6:
            columns[f"c{i}"] = digits[(x % np.uint64(36)).astype(np.int64)]
            x //= np.uint64(36)
        else:
            columns[f"c{i}"] = digits[rng.integers(0, 36, len(numbers))]
    return pl.DataFrame(columns).select(pl.concat_str([pl.lit(prefix), *[pl.col(c) for c in columns]]).alias("id")).to_series()


def user_activity(rng: np.random.Generator, n: int, min_count: int, alpha: float) -> np.ndarray:
    """Per-user interaction counts: min_count * (1 + Pareto(alpha)), summing to exactly n."""
    mean = min_count * alpha / (alpha - 1)
    guess = int(n / mean * 1.2) + 16
    counts = np.floor(min_count * (1 + rng.pareto(alpha, guess))).astype(np.int64)
    counts = np.minimum(counts, max(n // 100, min_count * 50))  # no single user dominates small runs
    while counts.sum() < n:
        counts = np.concatenate([counts, counts[: len(counts) // 2 + 1]])
    cut = int(np.searchsorted(np.cumsum(counts), n))
    counts = counts[: cut + 1].copy()
    counts[-1] -= counts.sum() - n
    return counts[counts > 0]


def make_synthetic_amazon(
    out_dir: str | Path,
    interactions: int = 10_000_000,
    category: str = "Synthetic",
    seed: int = 0,
    items_per_interaction: float = 0.05,
    zipf_s: float = 0.9,
    min_user_count: int = 4,
    user_alpha: float = 1.6,
    chunk_rows: int = 1_000_000,
) -> Synthetic:
    """Write ``<category>.jsonl`` and ``meta_<category>.jsonl`` under ``out_dir``.

    Items: ``interactions * items_per_interaction`` of them, drawn with probability proportional
    to rank^-zipf_s (ranks scattered over ids). Users: counts ``min_user_count * (1 + Pareto)``,
    so most have >= 5 interactions. Rows are shuffled so users interleave, as in the real files.
    """
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = int(interactions)
    n_items = max(10, int(n * items_per_interaction))
    counts = user_activity(rng, n, min_user_count, user_alpha)
    n_users = len(counts)

    weights = np.arange(1, n_items + 1, dtype=np.float64) ** -zipf_s
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    rank_to_item = rng.permutation(n_items)
    user_of_row = rng.permutation(np.repeat(np.arange(n_users), counts))
    item_of_row = rank_to_item[np.minimum(np.searchsorted(cdf, rng.random(n)), n_items - 1)]
    t0, t1 = 946_684_800_000, 1_694_000_000_000  # 2000-01-01 .. 2023-09, milliseconds
    timestamps = rng.integers(t0, t1, n)

    item_ids = _ids("B0", np.arange(n_items), 8, rng)
    user_ids = _ids("AE", np.arange(n_users), 26, rng)
    pools = {
        name: _pool(rng, mean, sigma)
        for name, mean, sigma in [("title", 24, 0.6), ("text", 220, 1.0), ("mtitle", 80, 0.5), ("feature", 60, 0.5), ("desc", 300, 0.8)]
    }

    reviews = out / f"{category}.jsonl"
    with open(reviews, "wb") as fh:
        for lo in range(0, n, chunk_rows):
            hi = min(n, lo + chunk_rows)
            m = hi - lo
            parent = item_ids.gather(item_of_row[lo:hi])
            has_image = rng.random(m) < 0.05
            url = "https://m.media-amazon.com/images/I/71synthetic._SL256_.jpg"
            chunk = pl.DataFrame(
                {"i": np.arange(m)}
            ).select(
                rating=pl.Series(rng.choice([1.0, 2.0, 3.0, 4.0, 5.0], m, p=[0.07, 0.05, 0.08, 0.15, 0.65])),
                title=_draw(pools["title"], rng, m),
                text=_draw(pools["text"], rng, m),
                images=pl.when(pl.Series(has_image))
                .then(
                    pl.concat_list(
                        pl.struct(small_image_url=pl.lit(url), medium_image_url=pl.lit(url), large_image_url=pl.lit(url), attachment_type=pl.lit("IMAGE"))
                    )
                )
                .otherwise(
                    pl.concat_list(
                        pl.struct(small_image_url=pl.lit(url), medium_image_url=pl.lit(url), large_image_url=pl.lit(url), attachment_type=pl.lit("IMAGE"))
                    ).list.head(0)
                ),
                asin=parent,  # variants share the parent in most rows of the real data too
                parent_asin=parent,
                user_id=user_ids.gather(user_of_row[lo:hi]),
                timestamp=pl.Series(timestamps[lo:hi]),
                helpful_vote=pl.Series(np.minimum(rng.geometric(0.6, m) - 1, 10_000)),
                verified_purchase=pl.Series(rng.random(m) < 0.9),
            )
            chunk.write_ndjson(fh)

    meta = out / f"meta_{category}.jsonl"
    tree = pl.Series([t for t in _CATEGORY_TREE], dtype=pl.List(pl.String))
    with open(meta, "wb") as fh:
        for lo in range(0, n_items, chunk_rows):
            hi = min(n_items, lo + chunk_rows)
            m = hi - lo
            n_feat = rng.integers(0, 6, m)
            n_desc = rng.integers(0, 3, m)
            chunk = pl.DataFrame({"i": np.arange(m)}).select(
                main_category=pl.lit("Musical Instruments"),
                title=_draw(pools["mtitle"], rng, m),
                average_rating=pl.Series(np.round(rng.uniform(1, 5, m), 1)),
                rating_number=pl.Series(rng.integers(1, 5000, m)),
                features=pl.concat_list([pl.lit(_draw(pools["feature"], rng, m)) for _ in range(5)]).list.head(pl.lit(pl.Series(n_feat))),
                description=pl.concat_list([pl.lit(_draw(pools["desc"], rng, m)) for _ in range(2)]).list.head(pl.lit(pl.Series(n_desc))),
                # The real file mixes numbers and nulls here; readers must not care.
                price=pl.when(pl.Series(rng.random(m) < 0.3)).then(None).otherwise(pl.Series(np.round(rng.uniform(2, 500, m), 2))),
                images=pl.concat_list(
                    pl.struct(thumb=pl.lit("https://x/t.jpg"), large=pl.lit("https://x/l.jpg"), variant=pl.lit("MAIN"), hi_res=pl.lit(None, pl.String))
                ),
                videos=pl.concat_list(pl.struct(title=pl.lit(""), url=pl.lit(""), user_id=pl.lit(""))).list.head(0),
                store=pl.concat_str(pl.lit("Brand"), pl.Series(rng.integers(0, 2000, m)).cast(pl.String)),
                categories=tree.gather(rng.integers(0, len(_CATEGORY_TREE), m)),
                details=pl.struct(Brand=pl.lit("Brand"), **{"Item Weight": pl.lit("1.2 pounds")}),
                parent_asin=item_ids.slice(lo, m),
                bought_together=pl.lit(None, pl.String),
            )
            chunk.write_ndjson(fh)
    return Synthetic(reviews, meta, n, n_users, n_items, time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--interactions", type=int, default=10_000_000)
    parser.add_argument("--category", default="Synthetic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--zipf-s", type=float, default=0.9, help="item popularity exponent")
    parser.add_argument("--items-per-interaction", type=float, default=0.05)
    args = parser.parse_args(argv)
    res = make_synthetic_amazon(args.out_dir, args.interactions, args.category, args.seed, args.items_per_interaction, args.zipf_s)
    print(f"wrote {res.reviews} ({res.interactions:,} reviews, {res.users:,} users) and {res.meta} ({res.items:,} items) in {res.seconds:.1f}s")


if __name__ == "__main__":
    main()
