"""The ``genrec`` command: one sub-command per pipeline stage (what dvc.yaml runs).

Every command reads params.yaml (``--params``), applies ``-S section.key=value`` overrides the way
``dvc exp run -S`` does, seeds the run, and calls ``stages.<name>.run(params, root)``. Stage
modules are imported lazily so ``genrec --help`` stays instant. User errors (bad input, impossible
params) print one line and exit with status 2.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Generative recommendation pipeline: each command is one DVC stage (see dvc.yaml). "
    "Run them all with `dvc repro`, or one alone for debugging.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params.yaml to read.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-S", help="Override a param, e.g. -S data.max_items=50 (repeatable; value read as YAML)."),
]
RootOpt = Annotated[Path, typer.Option("--root", help="Project root under which data/ and reports/ live.")]


def _run_stage(module: str, params_file: Path, overrides: list[str] | None, root: Path) -> None:
    from genrec_core.config import load_params
    from genrec_core.errors import GenrecError
    from genrec_core.runtime import seed_everything

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        params = load_params(params_file, overrides or [])
        seed_everything(params.seed)
        importlib.import_module(f"stages.{module}").run(params, root)
    except GenrecError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None


@app.command()
def preprocess(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, root: RootOpt = Path(".")) -> None:
    """Raw interactions -> five-core, time-ordered sequences and leave-one-out example tables.

    Reads the dataset named by data.dataset from data.raw_dir (ml-100k is downloaded and verified
    when raw_dir is null). Writes data/processed/{items,sequences,train,valid,test}.parquet,
    data/processed/dataset.json and reports/data_stats.{json,md}.
    """
    _run_stage("preprocess", params, set_, root)


@app.command()
def embed(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, root: RootOpt = Path(".")) -> None:
    """Item text -> vectors with sentence-transformers (or mean pooling of any transformers model).

    Renders embed.template over each item's fields, encodes in batches on embed.device, optionally
    PCA-whitens to embed.pca_dim. Writes data/embeddings/item_vectors.parquet (item_id, vector).
    """
    _run_stage("embed", params, set_, root)


@app.command("train-tokenizer")
def train_tokenizer(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, root: RootOpt = Path(".")) -> None:
    """Item vectors -> a trained tokenizer (tokenizer.kind: rqvae, pq or rqkmeans).

    RQ-VAE keeps its last tokenizer.keep_last epochs and resumes from data/tokenizer/last.pt when a
    run was interrupted; PQ and RQ-KMeans have no epochs and keep one. Writes data/tokenizer/ and
    per-epoch metrics to reports/tokenizer/.
    """
    _run_stage("train_tokenizer", params, set_, root)


@app.command("emit-ids")
def emit_ids(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, root: RootOpt = Path(".")) -> None:
    """Kept tokenizers -> one collision-free semantic ID per item per tokenizer.

    Collisions are resolved by ids.collision (reassign_last or dedup_level). Writes
    data/ids/item_ids.parquet (item_id, tokenizer, codes) and reports/ids/emit.json.
    """
    _run_stage("emit_ids", params, set_, root)


@app.command("analyse-ids")
def analyse_ids(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, root: RootOpt = Path(".")) -> None:
    """ID quality: candidates filtered per level, purity gain, codebook usage, ID drift across epochs.

    Writes JSON, Markdown tables and PNG plots to reports/ids/.
    """
    _run_stage("analyse_ids", params, set_, root)


@app.command("token-weights")
def token_weights(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, root: RootOpt = Path(".")) -> None:
    """Data-derived token weights of the SPEC 6 losses -> reports/token_weights.json.

    Front-greater (mu_k and per-level weights, paper and released variants), frequency (weight of
    every token of every level, beta 0.99) and IGD (share of zero-gain tokens per level).
    """
    _run_stage("token_weights", params, set_, root)


@app.command()
def train(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, root: RootOpt = Path(".")) -> None:
    """Semantic IDs + example tables -> a trained T5 generative recommender.

    Trains on the IDs of recommender.tokenizer with the loss strategy recommender.loss, selects the
    model on validation NDCG@10 (same beam search as the test) and stops early. Checkpoints every
    epoch and on interrupt to data/recommender/last.pt; a rerun resumes from it. Logs with dvclive
    to reports/train/.
    """
    _run_stage("train", params, set_, root)


@app.command()
def evaluate(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, root: RootOpt = Path(".")) -> None:
    """Best checkpoint -> constrained beam search over every test user -> Hit@K, NDCG@K.

    Writes data/predictions/test.parquet (user_id, target_item, items, scores) and
    reports/metrics.json (Hit/NDCG at evaluate.ks and relaxed prefix-match NDCG@5).
    """
    _run_stage("evaluate", params, set_, root)


@app.command()
def analyse(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, root: RootOpt = Path(".")) -> None:
    """Predictions -> head/tail metrics, popularity deciles, examples, MostPop and Markov floors.

    Writes reports/analysis/ (JSON, Markdown, PNG) and reports/README.md.
    """
    _run_stage("analyse", params, set_, root)


@app.command()
def overrides(config: Annotated[Path, typer.Argument(help="A YAML overlay, e.g. configs/yelp-gpu.yaml.")]) -> None:
    """Print a params overlay as `-S key=value` arguments for `dvc exp run` or any stage command.

    Example: dvc exp run $(genrec overrides configs/yelp-gpu.yaml)
    """
    from genrec_core.config import flatten_overlay
    from genrec_core.errors import GenrecError

    try:
        typer.echo(" ".join(f"-S {item}" for item in flatten_overlay(config)))
    except GenrecError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None


if __name__ == "__main__":  # pragma: no cover
    app()
