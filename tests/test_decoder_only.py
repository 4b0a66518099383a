"""``recommender.model: decoder_only``: it learns the toy pattern, its beam search is exact against
brute-force scoring, the level softmax keeps every step in its level, best.pt rebuilds it, and the
train/evaluate commands run it end to end.

References are computed independently of ``DecoderOnlyRecommender.decode``: brute force calls the
underlying LLaMA on each user's unpadded sequence (history, eos, PAD, the item's tokens, default
positions, no mask) and writes the per-level log-softmax out by hand.

Synthetic data (as tests/test_trainer.py): 40 items with 2-token IDs; every sequence follows
next = (7 x + 3) mod 40; chance NDCG@10 is about 0.11, chance Hit@10 0.25.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from helpers import next_item_pattern_splits

from genrec_core.config import RecommenderParams
from genrec_core.evaluation.baselines import PREDICTION_SCHEMA
from genrec_core.io import write_parquet
from genrec_core.methods import MethodContext
from genrec_core.methods.plain import PlainMethod
from genrec_core.paths import ArtifactPaths
from genrec_core.recommender.beam_search import constrained_beam_search
from genrec_core.recommender.checkpoint import load_recommender
from genrec_core.recommender.data import SequenceEncoder, examples_from_frame
from genrec_core.recommender.decoder_only import DecoderOnlyRecommender
from genrec_core.recommender.interface import rank_examples
from genrec_core.recommender.losses import LossContext, build_loss
from genrec_core.recommender.model import build_generative_model
from genrec_core.recommender.trainer import Trainer
from genrec_core.recommender.trie import ItemTrie
from genrec_core.recommender.vocab import EOS, PAD, SemanticIdVocab
from genrec_core.runtime import seed_everything
from genrec_core.tokenizers.id_table import build_id_table

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- toy pattern data

N_ITEMS = 40
FRAMES = next_item_pattern_splits(N_ITEMS, 5, 60, 8, 0)
CODES = np.stack([np.arange(N_ITEMS) // 8, np.arange(N_ITEMS) % 8], axis=1)
PATTERN_VOCAB = SemanticIdVocab.from_codes([CODES])
PATTERN_TOKENS = torch.from_numpy(PATTERN_VOCAB.codes_to_tokens(CODES))


def small_params(**kw) -> RecommenderParams:
    base = dict(
        model="decoder_only",
        num_layers=1,
        num_decoder_layers=1,
        d_model=32,
        d_ff=64,
        num_heads=2,
        d_kv=16,
        dropout=0.0,
        lr=0.01,
        warmup_steps=5,
        batch_size=32,
        epochs=3,
        patience=100,
        eval_beam_size=10,
        eval_batch_size=32,
        log_every=4,
    )
    base.update(kw)
    return RecommenderParams(**base)


class LossRecorder(PlainMethod):
    """The default method, keeping every step's loss."""

    def __init__(self, context):
        super().__init__(context)
        self.losses: list[float] = []

    def on_step_end(self, trainer, batch, out):
        super().on_step_end(trainer, batch, out)
        self.losses.append(float(out.loss.detach()))


def make_trainer(tmp_path, params: RecommenderParams, method=LossRecorder, checkpoint_meta=None) -> Trainer:
    seed_everything(0)
    model = build_generative_model(params, PATTERN_VOCAB)
    encoder = SequenceEncoder(PATTERN_TOKENS, params.encoder_input, user_buckets=params.user_tokens, user_token_offset=PATTERN_VOCAB.size)
    loss = build_loss(params.loss, params.loss_params, LossContext(PATTERN_VOCAB, PATTERN_TOKENS))
    return Trainer(
        model,
        params,
        method(MethodContext(encoder, loss)),
        examples_from_frame(FRAMES["train"]),
        examples_from_frame(FRAMES["valid"]),
        checkpoint_dir=tmp_path / "ckpt",
        reports_dir=tmp_path / "reports",
        seed=0,
        fingerprint="fp",
        checkpoint_meta=checkpoint_meta,
        device="cpu",
        progress=False,
        use_dvclive=False,
    )


@pytest.mark.parametrize("encoder_input", ["tokens", "items"])
def test_learns_the_next_item_pattern(tmp_path, encoder_input):
    trainer = make_trainer(tmp_path, small_params(encoder_input=encoder_input, epochs=15))
    recorder = trainer.method
    assert isinstance(trainer.model, DecoderOnlyRecommender)
    summary = trainer.fit()
    start, end = np.mean(recorder.losses[:3]), np.mean(recorder.losses[-10:])
    # Measured on an AMD EPYC (1 and 2 threads, the same): start 2.69 / 2.69, end / start 0.18 / 0.21, NDCG@10 0.87 / 0.59, hit@10 1.0 / 1.0
    # (tokens / items): each bound below keeps a margin of >= 0.19 (start: 7%).
    assert start > 2.5  # about log(8): the first steps are uniform guesses over a level's 8 codes and eos
    assert end < 0.35 * start, (start, end)
    assert summary["best_valid_ndcg@10"] > 0.4  # chance: ~0.11
    assert summary["best_valid"]["hit@10"] > 0.8  # chance: 0.25
    assert summary["steps"] == 15 * 10


def test_a_cft_loss_trains_the_decoder_only_model(tmp_path):
    """The losses with an extra forward pass (CFT's history-free input: eos alone) work unchanged."""
    trainer = make_trainer(tmp_path, small_params(loss="cft", epochs=2, level_softmax=True))
    trainer.fit()
    recorder = trainer.method
    assert all(np.isfinite(recorder.losses)) and len(recorder.losses) == 20


# --------------------------------------------------------------------------- exact beam search

VOCAB = SemanticIdVocab((6, 5, 4))


def all_items() -> torch.Tensor:
    codes = np.array([(a, b, c) for a in range(6) for b in range(5) for c in range(4)])
    return torch.from_numpy(VOCAB.codes_to_tokens(codes))


def random_model(encoder_input: str, level_softmax: bool, user_tokens: int = 0, seed: int = 0) -> DecoderOnlyRecommender:
    """Random weights scaled up so that scores spread (no near-ties in the rankings)."""
    torch.manual_seed(seed)
    params = RecommenderParams(
        model="decoder_only",
        encoder_input=encoder_input,
        num_layers=1,
        num_decoder_layers=1,
        d_model=32,
        d_ff=64,
        num_heads=4,
        d_kv=8,
        dropout=0.1,
        level_softmax=level_softmax,
        user_tokens=user_tokens,
    )
    model = DecoderOnlyRecommender(params, VOCAB)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.mul_(3.0)
    return model.eval()


def padded_batch(items: torch.Tensor, encoder_input: str, user_tokens: int):
    """Three users with histories of 3, 4 and 1 items (so the batch is padded)."""
    enc = SequenceEncoder(items, encoder_input, user_buckets=user_tokens, user_token_offset=VOCAB.size)
    history = torch.tensor([[3, 4, 5, -1], [7, 8, 9, 10], [1, -1, -1, -1]])
    lengths = torch.tensor([3, 4, 1])
    return enc.encode_history(history, lengths, None, torch.tensor([5, 6, 7]) if user_tokens else None)


def level_blocks() -> list[range]:
    offsets = VOCAB.level_offsets.tolist()
    return [range(o, o + s) for o, s in zip(offsets, VOCAB.level_sizes)] + [range(EOS, EOS + 1)]


def brute_force_scores(model: DecoderOnlyRecommender, ids: torch.Tensor, mask: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """[N, L + 1] log-probs of every item's tokens and eos for one user ([1, S(, L)] input): the
    user's unpadded prefix, then PAD and the item's tokens, through the LLaMA itself (default
    positions, no attention mask); under level_softmax the per-level log-softmax by hand."""
    n, length_l = items.shape
    keep = mask[0].bool()
    table = model.llama.get_input_embeddings().weight
    prefix = table[ids[0][keep]]
    prefix = prefix.sum(dim=-2) if prefix.dim() == 3 else prefix  # items: sum of each group's tokens
    target_in = torch.cat([torch.full((n, 1), PAD), items], dim=1)  # PAD, y_1 .. y_L
    embeds = torch.cat([prefix.unsqueeze(0).expand(n, -1, -1), table[target_in]], dim=1)
    with torch.no_grad():
        logits = model.llama(inputs_embeds=embeds).logits[:, -(length_l + 1) :].double()
    labels = torch.cat([items, torch.full((n, 1), EOS)], dim=1)
    out = torch.zeros(n, length_l + 1, dtype=torch.float64)
    for step, block in enumerate(level_blocks()):
        row = logits[:, step]
        if model.level_softmax:
            sub = row[:, block.start : block.stop]
            out[:, step] = sub.gather(1, (labels[:, step] - block.start).unsqueeze(1)).squeeze(1) - torch.logsumexp(sub, dim=-1)
        else:
            out[:, step] = row.gather(1, labels[:, step : step + 1]).squeeze(1) - torch.logsumexp(row, dim=-1)
    return out


@pytest.mark.parametrize(
    ("encoder_input", "level_softmax", "user_tokens"),
    [("tokens", False, 0), ("tokens", True, 3), ("items", False, 3), ("items", True, 0)],
)
def test_beam_search_equals_brute_force_over_every_item(encoder_input, level_softmax, user_tokens):
    """With a beam of at least the 30 distinct 2-token prefixes the search is exact: its top 30
    must be brute force's top 30, same order, same scores. A beam's score is the sum of its L
    code tokens' log-probs; eos, the only token the trie allows after a leaf, adds log p(eos),
    which is exactly 0 under the level softmax (step L's level is eos alone)."""
    model = random_model(encoder_input, level_softmax, user_tokens)
    items = all_items()
    ids, mask = padded_batch(items, encoder_input, user_tokens)
    trie = ItemTrie.build(items, model.config.vocab_size)
    result = constrained_beam_search(model, ids, mask, trie, beam_size=30)
    full = constrained_beam_search(model, ids, mask, trie, beam_size=50)
    for b in range(ids.shape[0]):
        logp = brute_force_scores(model, ids[b : b + 1], mask[b : b + 1], items)
        codes_only = logp[:, :-1].sum(dim=1)
        top = torch.topk(codes_only, 30)
        assert result.items[b].tolist() == top.indices.tolist()
        assert torch.allclose(result.scores[b].double(), top.values, atol=1e-4)
        assert full.items[b, :30].tolist() == top.indices.tolist()  # a wider beam changes nothing
        if level_softmax:
            assert float(logp[:, -1].abs().max()) == 0.0
            with_eos = logp.sum(dim=1)
            assert torch.topk(with_eos, 30).indices.tolist() == top.indices.tolist()


def test_teacher_forcing_equals_the_unpadded_forward_pass():
    """``forward`` on a padded batch gives each user the log-probs of its own unpadded sequence."""
    model = random_model("tokens", False)
    items = all_items()
    ids, mask = padded_batch(items, "tokens", 0)
    labels = torch.cat([items[[2, 50, 99]], torch.full((3, 1), EOS)], dim=1)
    with torch.no_grad():
        logp = torch.log_softmax(model(ids, mask, labels), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    for b in range(3):
        ref = brute_force_scores(model, ids[b : b + 1], mask[b : b + 1], items)[[2, 50, 99][b]]
        assert torch.allclose(logp[b].double(), ref, atol=1e-5)


def test_a_smaller_beam_returns_valid_distinct_items_best_first():
    model = random_model("items", True)
    items = all_items()
    ids, mask = padded_batch(items, "items", 0)
    result = constrained_beam_search(model, ids, mask, ItemTrie.build(items, model.config.vocab_size), beam_size=5)
    assert result.items.shape == (3, 5) and bool((result.items >= 0).all())
    for row, scores in zip(result.items, result.scores):
        assert len(set(row.tolist())) == 5
        assert bool((scores[:-1] >= scores[1:]).all())


# --------------------------------------------------------------------------- level softmax


def test_level_softmax_never_puts_probability_on_another_level():
    model = random_model("tokens", True, user_tokens=3)
    items = all_items()
    ids, mask = padded_batch(items, "tokens", 3)
    labels = torch.cat([items[[0, 60, 119]], torch.full((3, 1), EOS)], dim=1)
    with torch.no_grad():
        probs = torch.softmax(model(ids, mask, labels), dim=-1)  # [B, L + 1, V + user tokens]
    for step, block in enumerate(level_blocks()):
        inside = probs[:, step, block.start : block.stop].sum(-1)
        assert torch.allclose(inside, torch.ones_like(inside), atol=1e-6)
        outside = probs[:, step].clone()
        outside[:, block.start : block.stop] = 0
        assert float(outside.max()) == 0.0  # exactly zero (user tokens included), not merely small
    # beam search draws every token of step l from level l's block
    result = constrained_beam_search(model, ids, mask, ItemTrie.build(items, model.config.vocab_size), beam_size=20)
    decoded = items[result.items]  # [B, beam, L]
    for step in range(VOCAB.id_length):
        block = level_blocks()[step]
        assert bool(((decoded[..., step] >= block.start) & (decoded[..., step] < block.stop)).all())


def test_level_softmax_equals_per_level_log_softmax_of_the_raw_logits():
    restricted, plain = random_model("items", True), random_model("items", False)  # same seed: same weights
    items = all_items()
    ids, mask = padded_batch(items, "items", 0)
    labels = torch.cat([items[[4, 8, 15]], torch.full((3, 1), EOS)], dim=1)
    with torch.no_grad():
        got = torch.log_softmax(restricted(ids, mask, labels), dim=-1)
        raw = plain(ids, mask, labels)
    for step, block in enumerate(level_blocks()):
        sub = raw[:, step, block.start : block.stop]
        assert torch.allclose(got[:, step, block.start : block.stop], sub - torch.logsumexp(sub, dim=-1, keepdim=True), atol=1e-5)


# --------------------------------------------------------------------------- checkpoint


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path):
    import dataclasses

    params = small_params(encoder_input="tokens", level_softmax=True, user_tokens=4, dropout=0.1, epochs=1)
    meta = {"params": dataclasses.asdict(params), "vocab": PATTERN_VOCAB.to_dict(), "tokenizer": "epoch_0001", "item_tokens": PATTERN_TOKENS}
    trainer = make_trainer(tmp_path, params, checkpoint_meta=meta)
    trainer.fit()  # one epoch: best.pt holds the final weights
    loaded = load_recommender(tmp_path / "ckpt" / "best.pt")
    assert isinstance(loaded.model, DecoderOnlyRecommender) and not loaded.model.training
    assert loaded.params == params and loaded.tokenizer == "epoch_0001"
    assert loaded.model.config.num_hidden_layers == 2 and loaded.model.config.vocab_size == PATTERN_VOCAB.size + 4
    saved, trained = loaded.model.state_dict(), trainer.model.state_dict()
    assert saved.keys() == trained.keys() and all(torch.equal(saved[k], trained[k]) for k in saved)
    encoder = SequenceEncoder(loaded.item_tokens, "tokens", user_buckets=4, user_token_offset=loaded.vocab.size)
    test = examples_from_frame(FRAMES["test"])
    a_items, a_scores = rank_examples(trainer.model, test, encoder.collate, 10, 16)
    b_items, b_scores = rank_examples(loaded.model, test, encoder.collate, 10, 16)
    assert np.array_equal(a_items, b_items) and np.array_equal(a_scores, b_scores)
    assert (a_items >= 0).all()


# --------------------------------------------------------------------------- the commands


def _write_inputs(root: Path) -> ArtifactPaths:
    paths = ArtifactPaths(root)
    items = pl.DataFrame(
        {
            "item_id": pl.Series(np.arange(N_ITEMS), dtype=pl.Int32),
            "source_item_id": [str(i) for i in range(N_ITEMS)],
            "title": [f"item {i}" for i in range(N_ITEMS)],
        }
    )
    write_parquet(items, paths.items)
    for split, df in FRAMES.items():
        write_parquet(df, paths.examples(split))
    write_parquet(build_id_table(np.arange(N_ITEMS), {"epoch_0001": CODES}), paths.id_table)
    return paths


TINY_DECODER_ONLY = [
    "recommender.model=decoder_only",
    "recommender.num_layers=1",
    "recommender.num_decoder_layers=1",
    "recommender.d_model=32",
    "recommender.d_ff=64",
    "recommender.num_heads=2",
    "recommender.d_kv=16",
    "recommender.lr=0.01",
    "recommender.warmup_steps=5",
    "recommender.batch_size=32",
    "recommender.epochs=3",
    "recommender.eval_beam_size=10",
    "recommender.log_every=5",
    "recommender.device=cpu",
    "evaluate.beam_size=10",
    "evaluate.ks=[1,5,10]",
]


def test_genrec_train_and_evaluate_run_the_decoder_only_model(tmp_path):
    from typer.testing import CliRunner

    from genrec_core.cli import app

    paths = _write_inputs(tmp_path)
    common = ["--params", str(REPO / "params.yaml"), "--root", str(tmp_path)]
    overrides = [arg for item in TINY_DECODER_ONLY for arg in ("-S", item)]
    runner = CliRunner()
    trained = runner.invoke(app, ["train", *common, *overrides])
    assert trained.exit_code == 0, trained.output
    summary = json.loads((paths.train_reports_dir / "summary.json").read_text())
    assert summary["model_kind"] == "decoder_only" and summary["epochs"] == 3
    best = torch.load(paths.recommender_dir / "best.pt", weights_only=True)
    assert best["params"]["model"] == "decoder_only"
    evaluated = runner.invoke(app, ["evaluate", *common, *overrides])
    assert evaluated.exit_code == 0, evaluated.output
    preds = pl.read_parquet(paths.predictions)
    assert dict(preds.schema) == PREDICTION_SCHEMA
    assert preds.height == FRAMES["test"].height
    assert preds["target_item"].to_list() == FRAMES["test"]["target"].to_list()
    assert all(len(row) == 10 and len(set(row)) == 10 and min(row) >= 0 for row in preds["items"].to_list())
    assert all(np.all(np.diff(row) <= 0) for row in preds["scores"].to_list())  # best first
    metrics = json.loads(paths.metrics.read_text())
    assert metrics["users"] == preds.height and metrics["beam_size"] == 10 and metrics["tokenizer"] == "epoch_0001"
    assert 0.0 <= metrics["ndcg@10"] <= 1.0


def test_decoder_only_is_a_known_model_and_needs_an_even_head_size():
    from genrec_core.errors import ParamError

    RecommenderParams(model="decoder_only").validate()
    with pytest.raises(ParamError, match="recommender.d_kv"):
        RecommenderParams(model="decoder_only", d_kv=7).validate()
    RecommenderParams(model="tiger", d_kv=7).validate()  # T5 has no such constraint
    with pytest.raises(ParamError, match="recommender.model"):
        RecommenderParams(model="decoder").validate()
