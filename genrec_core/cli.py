"""The ``genrec`` command: one sub-command per pipeline stage (what dvc.yaml runs), plus the
commands that use a trained model (``recommend``, ``export``, ``serve``, ``add-items``; not stages).

Every command reads params.yaml (``--params``), applies ``-S section.key=value`` overrides the way
``dvc exp run -S`` does, seeds the run, and calls ``stages.<name>.run(params, root)``. Stage
modules are imported lazily so ``genrec --help`` stays instant. User errors (bad input, impossible
params) print one line and exit with status 2.
"""

from __future__ import annotations

# First, before anything imports torch: its OpenMP threads sleep rather than spin while they wait
# (OMP_WAIT_POLICY=PASSIVE unless the environment sets it), so a run beside other busy processes
# does not slow to a crawl (genrec_core/runtime.py, reports/benchmarks/oversubscription.md).
from genrec_core.runtime import set_openmp_env_defaults

set_openmp_env_defaults()

import importlib  # noqa: E402 (each import below: after set_openmp_env_defaults on purpose)
import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated  # noqa: E402

import typer  # noqa: E402

app = typer.Typer(
    help="Generative recommendation pipeline: each command is one DVC stage (see dvc.yaml); "
    "run them all with `dvc repro`, or one alone for debugging. recommend, export, serve and add-items use "
    "a trained model (not stages).",
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


def _run_stage(module: str, params_file: Path, overrides: list[str] | None, root: Path, **options) -> None:
    """Load the params, seed, run ``stages.<module>.run(params, root, **options)``."""
    from genrec_core.config import load_params
    from genrec_core.errors import GenrecError
    from genrec_core.params_validation import validate_everything
    from genrec_core.runtime import seed_everything

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        params = validate_everything(load_params(params_file, overrides or []))
        seed_everything(params.seed)
        importlib.import_module(f"stages.{module}").run(params, root, **options)
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
    """Semantic IDs + example tables -> a trained recommender (recommender.model: decoder_only by default, t5 = TIGER's T5 (old name tiger), sasrec, gru4rec).

    Trains on the IDs of recommender.tokenizer with the loss strategy recommender.loss, selects the
    model on validation NDCG@10 (same beam search as the test) and stops early. Checkpoints every
    epoch and on interrupt to data/recommender/last.pt; a rerun resumes from it. Logs with dvclive
    to reports/train/. With recommender.processes > 1 (and not already under torchrun) it relaunches
    itself as `python -m torch.distributed.run --standalone --nproc_per_node N` (DDP).
    """
    processes = _train_processes(params, set_)
    if processes > 1:
        args = ["--params", str(params), "--root", str(root), *(a for o in set_ or [] for a in ("-S", o))]
        raise typer.Exit(code=_relaunch_under_torchrun(processes, args))
    _run_stage("train", params, set_, root)


def _train_processes(params_file: Path, overrides: list[str] | None) -> int:
    """``recommender.processes``, or 1 when already under torchrun (WORLD_SIZE set) or the params
    do not load (``_run_stage`` then reports the error)."""
    import os

    from genrec_core.config import load_params

    if "WORLD_SIZE" in os.environ:
        return 1
    try:
        return int(load_params(params_file, overrides or []).recommender.processes)
    except Exception:  # noqa: BLE001 - the stage run reports bad params with its usual message
        return 1


def _relaunch_under_torchrun(processes: int, args: list[str]) -> int:
    """Run ``genrec train`` with the same arguments under torchrun (one node, ``processes``
    ranks); its exit code."""
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), "-m", "genrec_core.cli", "train", *args]
    typer.echo(f"recommender.processes={processes}: {' '.join(cmd)}", err=True)
    return subprocess.call(cmd)


@app.command()
def finetune(
    slot: Annotated[
        int, typer.Option("--slot", help="Fine-tuning slot r: the r-th tokenizer by cumulative influence (dvc.yaml: one stage per finetune.slots entry).")
    ] = 0,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    root: RootOpt = Path("."),
) -> None:
    """MTGRec: fine-tune the pre-trained model on one tokenizer (a no-op for other methods).

    From data/recommender/best.pt, AdamW at method_params.finetune_lr, cosine without warm-up,
    early stopping on validation. Writes data/finetune/SLOT/ and reports/method/finetune/SLOT/.
    """
    _run_stage("finetune", params, set_, root, slot=slot)


@app.command("select-tokenizer")
def select_tokenizer(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, root: RootOpt = Path(".")) -> None:
    """MTGRec: select the fine-tuned tokenizer best on validation; the evaluate stage tests only it.

    Writes reports/method/selected.json (for other methods: data/recommender/best.pt) and
    reports/method/finetune.csv (validation metrics of every fine-tuned tokenizer, selected).
    """
    _run_stage("select_tokenizer", params, set_, root)


@app.command()
def evaluate(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, root: RootOpt = Path(".")) -> None:
    """Selected checkpoint -> beam search over every test user -> Hit@K, NDCG@K.

    The checkpoint is reports/method/selected.json's (data/recommender/best.pt unless MTGRec);
    evaluate.trie false decodes without the trie, invalid IDs dropped.

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
    from genrec_core.config import flatten_overlay, load_params
    from genrec_core.errors import GenrecError
    from genrec_core.params_validation import validate_everything

    try:
        items = flatten_overlay(config)
        validate_everything(load_params(None, items))  # as any command would check them
        typer.echo(" ".join(f"-S {item}" for item in items))
    except GenrecError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None


# --------------------------------------------------------------------------- use a trained model
# Not DVC stages: they read a workspace's outputs (or an exported bundle) and write only where told.
# Their code lives in genrec_core/serving and is imported inside each command, so a stage's command
# never loads it (tests/test_dvc_dependencies.py does not follow these commands' bodies).

ModelOpt = Annotated[Path, typer.Option("--model", "-m", help="An exported bundle folder, or a workspace root (data/recommender/best.pt, data/processed/).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu | cuda | cuda:N | auto.")]


@app.command()
def recommend(
    history: Annotated[
        str | None, typer.Option("--history", help='One user\'s items, oldest first, as the dataset\'s own ids: "id1,id2,..." ("" = empty: popular items).')
    ] = None,
    input_: Annotated[Path | None, typer.Option("--input", help="Many users: CSV / Parquet / JSONL with a history column (and optional user_id).")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="With --input: the Parquet file to write (atomically).")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="How many items per user.")] = 10,
    model: ModelOpt = Path("."),
    user: Annotated[str | None, typer.Option("--user", help="The user's id (models trained with user tokens only).")] = None,
    skip_unknown: Annotated[bool, typer.Option("--skip-unknown", help="Drop unknown item ids with a warning instead of failing.")] = False,
    params: Annotated[Path | None, typer.Option("--params", "-p", help="Workspace only: params.yaml (default ROOT/params.yaml).")] = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Recommend with a trained model: one history (--history, prints a table) or a file (--input/--output).

    Examples: genrec recommend --history "i3,i9,i4" -k 10; genrec recommend -m bundle/ --input users.csv --output recs.parquet
    """
    from genrec_core.serving.commands import recommend_command

    recommend_command(history, input_, output, k, model, user, skip_unknown, params, device)


@app.command()
def export(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the bundle to (created; must be empty unless --force).")],
    root: RootOpt = Path("."),
    params: Annotated[Path | None, typer.Option("--params", "-p", help="params.yaml the model came from (default ROOT/params.yaml).")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing bundle folder (only a genrec bundle or an empty folder; anything else is refused).")
    ] = False,
) -> None:
    """Export the trained model of a workspace as a self-contained bundle (serve it without DVC).

    Writes weights (safetensors), model and vocabulary config, the ID table, item metadata, the
    tokenizer and manifest.json (sha256 per file, params, format version).
    """
    from genrec_core.serving.commands import export_command

    export_command(out_dir, root, params, force)


@app.command()
def serve(
    bundle: Annotated[Path, typer.Argument(help="An exported bundle folder (or a workspace root).")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", help="How long the micro-batcher waits for more requests.")] = 5.0,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Most requests ranked in one model call.")] = 64,
    device: DeviceOpt = "cpu",
    allow_writes: Annotated[
        bool,
        typer.Option(
            "--allow-writes",
            help="Turn on POST /items (adding items, saving the bundle); needs a token from GENREC_TOKEN or --token-file, "
            "sent as `Authorization: Bearer <token>`.",
        ),
    ] = False,
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help="File holding the write token (default: the GENREC_TOKEN environment variable).")
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            help="Host name a request may name in its Host header (repeatable; '*' = any; default: 127.0.0.1, localhost, ::1 and --host). Others get 400.",
        ),
    ] = None,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            "--forwarded-allow-ips",
            help="Behind a reverse proxy: the proxy's IPs (comma-separated) whose X-Forwarded-For/-Proto headers are trusted (uvicorn's default: 127.0.0.1).",
        ),
    ] = None,
    max_body_bytes: Annotated[int, typer.Option("--max-body-bytes", help="Limit: largest request body in bytes; more answers 413.")] = 1_000_000,
    max_history: Annotated[
        int,
        typer.Option(
            "--max-history",
            help="Limit: longest history accepted (422 beyond); a history longer than the model's window "
            "(within this cap) is cut to its last items, as in training.",
        ),
    ] = 10_000,
    max_k: Annotated[int, typer.Option("--max-k", help="Limit: largest k (422 beyond); beam search keeps max(k, beam size) beams.")] = 100,
    max_new_items: Annotated[int, typer.Option("--max-new-items", help="Limit: most items in one POST /items (413 beyond).")] = 1_000,
    max_text_chars: Annotated[int, typer.Option("--max-text-chars", help="Limit: longest text of a new item's field, in characters (422 beyond).")] = 10_000,
    max_queue: Annotated[int, typer.Option("--max-queue", help="Limit: most requests waiting for the micro-batcher (503 beyond).")] = 1_000,
    request_timeout_s: Annotated[float, typer.Option("--request-timeout-s", help="Limit: seconds a /recommend request may wait and rank (503 beyond).")] = 30.0,
) -> None:
    """Serve recommendations over HTTP: POST /recommend, GET /health, docs at /docs.

    Reads are open; POST /items only with --allow-writes and a token. Each limit is answered
    with 413 / 422 / 503 naming its option. Listens on 127.0.0.1 by default; see the README for
    running behind a reverse proxy (TLS, --allowed-host, --forwarded-allow-ips).
    """
    from genrec_core.serving.commands import serve_command

    limits = {
        "max_body_bytes": max_body_bytes,
        "max_history": max_history,
        "max_k": max_k,
        "max_new_items": max_new_items,
        "max_text_chars": max_text_chars,
        "max_queue": max_queue,
        "request_timeout_s": request_timeout_s,
    }
    serve_command(
        bundle,
        host,
        port,
        max_wait_ms,
        max_batch,
        device,
        limits=limits,
        allow_writes=allow_writes,
        token_file=token_file,
        allowed_hosts=allowed_host,
        forwarded_allow_ips=forwarded_allow_ips,
    )


@app.command("add-items")
def add_items(
    file: Annotated[
        Path, typer.Argument(help='New items: JSONL (one {"item_id", "text"} or {"item_id", <text fields>} per line), a JSON list, or CSV with a header.')
    ],
    bundle: Annotated[Path, typer.Option("--bundle", "-b", help="The exported bundle to extend.")],
    out: Annotated[Path | None, typer.Option("--out", help="Write the extended bundle here instead of over --bundle.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda (encoding the texts).")] = "cpu",
) -> None:
    """Add new items (cold start) to a bundle of a generative model: embed their text with the
    bundle's encoder, give them IDs with its tokenizer, extend the trie; they are then recommendable.

    Example: genrec add-items new_items.jsonl --bundle bundle/
    """
    from genrec_core.serving.commands import add_items_command

    add_items_command(file, bundle, out, device)


if __name__ == "__main__":  # pragma: no cover
    app()
