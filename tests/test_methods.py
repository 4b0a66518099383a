"""Training methods (``recommender.method``): the registry, its params, and a toy method that uses
every seam a method owns, resumed mid-epoch bit-identically.

The toy method (registered as ``toy``) tokenizes each training example with one of two ID tables
drawn from its own generator (custom collate, a per-example tokenizer choice, state to save), adds
a named per-example loss on an extra parameter that a second optimiser (SGD) updates, scales the
logits by a learnable temperature (an extra parameter of the AdamW step), takes two backward passes
per step (one per tokenizer group, as MTGRec's per-group gradients will), logs its own values and
saves all of it in ``last.pt``.

Synthetic data (as tests/test_trainer.py): 40 items with 2-token IDs; next = (7 x + 3) mod 40.
"""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import torch
from helpers import next_item_pattern_splits
from torch import nn

from genrec_core.config import RecommenderParams, flatten_overlay, load_params
from genrec_core.errors import ParamError
from genrec_core.methods import METHODS, Method, MethodContext, StepOutput, build_method, check_method_params, method_class, register_method
from genrec_core.methods.plain import PlainMethod
from genrec_core.recommender.data import SequenceEncoder, examples_from_frame
from genrec_core.recommender.losses import LOSSES, LossContext, LossOutput, build_loss
from genrec_core.recommender.model import GenerativeRecommender
from genrec_core.recommender.trainer import Trainer, TrainingInterrupted
from genrec_core.recommender.vocab import SemanticIdVocab
from genrec_core.runtime import seed_everything

N_ITEMS = 40
FRAMES = next_item_pattern_splits(N_ITEMS, 5, 30, 8, 0)
CODES = np.stack([np.arange(N_ITEMS) // 8, np.arange(N_ITEMS) % 8], axis=1)
OTHER_CODES = CODES[np.random.default_rng(3).permutation(N_ITEMS)]  # a second tokenizer: other IDs, same vocabulary
VOCAB = SemanticIdVocab.from_codes([CODES, OTHER_CODES])
TABLES = torch.from_numpy(np.stack([VOCAB.codes_to_tokens(CODES), VOCAB.codes_to_tokens(OTHER_CODES)]))  # [2, N, L]


def small_params(**kw) -> RecommenderParams:
    base = dict(
        num_layers=1,
        num_decoder_layers=1,
        d_model=16,
        d_ff=32,
        num_heads=2,
        d_kv=8,
        dropout=0.1,
        lr=0.01,
        warmup_steps=3,
        batch_size=16,
        epochs=3,
        patience=10,
        eval_beam_size=10,
        eval_batch_size=32,
        log_every=2,
        encoder_input="items",
    )
    base.update(kw)
    return RecommenderParams(**base)


@register_method("toy")
class ToyMethod(Method):
    """Every seam of ``Method`` at once (see the module docstring)."""

    param_defaults = {"aux_weight": 0.1, "second_tokenizer_prob": 0.5, "aux_lr": 0.05, "seed": 0}

    @classmethod
    def validate_params(cls, params, prefix):
        if not 0.0 <= params["second_tokenizer_prob"] <= 1.0:
            raise ParamError(f"{prefix}.second_tokenizer_prob", f"must be in [0, 1], got {params['second_tokenizer_prob']}")

    def __init__(self, context, **params):
        super().__init__(context, **params)
        self.rng = np.random.default_rng(self.params["seed"])  # its own generator: saved in last.pt
        self.counts = [0, 0]  # training examples seen per tokenizer

    def setup(self, trainer):
        self.log_temperature = nn.Parameter(torch.zeros((), device=trainer.device))  # in the AdamW step (extra_parameters)
        self.aux_vector = nn.Parameter(torch.zeros(trainer.params.d_model, device=trainer.device))  # its own optimiser
        super().setup(trainer)
        self.aux_optimizer = torch.optim.SGD([self.aux_vector], lr=self.params["aux_lr"], momentum=0.9)

    def extra_parameters(self, trainer):
        return [*super().extra_parameters(trainer), self.log_temperature]

    def tokenizer_index(self, trainer, examples, index):
        return torch.from_numpy((self.rng.random(len(index)) < self.params["second_tokenizer_prob"]).astype(np.int64))

    def compute_losses(self, trainer, batch):
        logits = trainer.train_model(batch.input_ids, batch.attention_mask, batch.labels)
        rec = self.loss_strategy(logits * self.log_temperature.exp(), batch.labels, batch, trainer.state).per_example
        target_embedding = trainer.model.input_embeddings(batch.labels[:, :1]).squeeze(1).detach()  # [B, d]
        aux = ((self.aux_vector - target_embedding) ** 2).mean(dim=1)
        w = self.params["aux_weight"]
        return LossOutput(rec.mean() + w * aux.mean(), terms={"rec": rec, "aux": aux}, per_example=rec + w * aux)

    def step(self, trainer, batch):
        out = self.compute_losses(trainer, batch)
        rec, aux = out.terms["rec"], out.terms["aux"]
        second = batch.tokenizer_index == 1
        n = len(batch)
        (rec[~second].sum() / n).backward(retain_graph=True)  # pass 1: the first tokenizer's examples
        (rec[second].sum() / n + self.params["aux_weight"] * aux.mean()).backward()  # pass 2: the second's, and aux
        grad_norm = self.clip_gradients(trainer)
        self.optimizer.step()
        self.aux_optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.aux_optimizer.zero_grad(set_to_none=True)
        self.counts[0] += int((~second).sum())
        self.counts[1] += int(second.sum())
        return StepOutput(out.loss, out, grad_norm, {"temperature": self.log_temperature.detach().exp(), "second_share": second.float().mean()})

    def summary(self, trainer):
        return {"toy_counts": list(self.counts)}

    def state_dict(self):
        return {
            **super().state_dict(),
            "aux_optimizer": self.aux_optimizer.state_dict(),
            "parameters": {"log_temperature": self.log_temperature.detach().clone(), "aux_vector": self.aux_vector.detach().clone()},
            "rng": self.rng.bit_generator.state,
            "counts": list(self.counts),
        }

    def load_state_dict(self, state):
        super().load_state_dict(state)
        with torch.no_grad():
            self.log_temperature.copy_(state["parameters"]["log_temperature"])
            self.aux_vector.copy_(state["parameters"]["aux_vector"])
        self.aux_optimizer.load_state_dict(state["aux_optimizer"])
        self.rng.bit_generator.state = state["rng"]
        self.counts = list(state["counts"])


class ToyStoppedAt13(ToyMethod):
    """The toy method, plus a SIGTERM after optimiser step 13 (epoch 2, batch 3 of 10)."""

    def on_step_end(self, trainer, batch, out):
        super().on_step_end(trainer, batch, out)
        if trainer.state.step == 13:
            trainer.handle_signal(signal.SIGTERM, None)


def context() -> MethodContext:
    return MethodContext(SequenceEncoder(TABLES, "items", default_tokenizer=0), build_loss("ce", {}, LossContext(VOCAB, TABLES[0])))


def make_trainer(tmp_path, method_cls=ToyMethod, init_seed=0, use_dvclive=False, **method_params) -> Trainer:
    seed_everything(init_seed)  # a resumed run must not depend on its fresh initialisation
    params = small_params(method=method_cls.name, method_params=method_params)
    return Trainer(
        GenerativeRecommender(params, VOCAB),
        params,
        method_cls(context(), **method_params),
        examples_from_frame(FRAMES["train"]),
        examples_from_frame(FRAMES["valid"]),
        checkpoint_dir=tmp_path / "ckpt",
        reports_dir=tmp_path / "reports",
        seed=0,
        fingerprint="fp",
        device="cpu",
        progress=False,
        use_dvclive=use_dvclive,
    )


def method_tensors(method: ToyMethod) -> dict[str, torch.Tensor]:
    """Every tensor of the method's state (optimiser moments included), by a flat name."""
    out = {}

    def walk(node, prefix):
        if isinstance(node, torch.Tensor):
            out[prefix] = node
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}")
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f"{prefix}.{i}")

    walk(method.state_dict(), "method")
    return out


# --------------------------------------------------------------------------- the toy method


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted toy run (dropout on, so the RNG states matter)."""
    trainer = make_trainer(tmp_path_factory.mktemp("toy-ref"), use_dvclive=True)
    trainer.fit()
    return trainer


def test_the_toy_method_uses_its_seams(reference):
    method = reference.method
    assert reference.state.step == 30 and sum(method.counts) == 3 * len(reference.train_examples)
    assert min(method.counts) > 0.3 * sum(method.counts)  # both tokenizers were drawn
    assert float(method.log_temperature.detach()) != 0.0 and float(method.aux_vector.detach().abs().sum()) > 0  # both extra parameters moved
    assert any(p is method.log_temperature for g in method.optimizer.param_groups for p in g["params"])
    assert method.aux_optimizer.state[method.aux_vector]["momentum_buffer"].abs().sum() > 0
    live = reference.reports_dir / "live" / "plots" / "metrics" / "train"
    for name in ("loss", "lr", "grad_norm", "temperature", "second_share"):
        assert (live / f"{name}.tsv").exists(), name
    summary = json.loads(reference.summary_path.read_text())
    assert summary["toy_counts"] == method.counts


def test_the_toy_method_resumed_mid_epoch_is_bit_identical(tmp_path, reference):
    with pytest.raises(TrainingInterrupted):
        make_trainer(tmp_path, ToyStoppedAt13).fit()
    ckpt = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=False)
    assert ckpt["state"]["step"] == 13 and ckpt["sampler"]["batches_done"] == 3
    assert set(ckpt["method"]) >= {"optimizer", "scheduler", "loss_strategy", "aux_optimizer", "parameters", "rng", "counts"}
    resumed = make_trainer(tmp_path, init_seed=123)
    resumed.fit()
    assert resumed.resumed_from is not None
    a, b = reference.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = method_tensors(reference.method), method_tensors(resumed.method)
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
    assert reference.method.counts == resumed.method.counts
    assert reference.method.rng.bit_generator.state == resumed.method.rng.bit_generator.state
    assert reference.state.evals == resumed.state.evals


def test_per_example_terms_take_gradients_over_any_subset(tmp_path):
    trainer = make_trainer(tmp_path)
    method = trainer.method
    batch = method.collate(trainer, trainer.train_examples, np.arange(12)).to("cpu")
    out = method.compute_losses(trainer, batch)
    assert set(out.terms) == {"rec", "aux"} and all(t.shape == (12,) for t in out.terms.values())
    out.terms["rec"][:5].mean().backward(retain_graph=True)  # the model's gradient from five examples
    assert trainer.model.t5.shared.weight.grad is not None and method.aux_vector.grad is None
    out.terms["aux"][5:].sum().backward()
    assert method.aux_vector.grad is not None and method.aux_vector.grad.abs().sum() > 0


class TigerStoppedAt13(PlainMethod):
    def on_step_end(self, trainer, batch, out):
        super().on_step_end(trainer, batch, out)
        if trainer.state.step == 13:
            trainer.handle_signal(signal.SIGTERM, None)


def test_a_last_pt_from_before_methods_still_resumes(tmp_path):
    """Format 1 (before methods) kept the plain method's optimizer, scheduler and loss strategy at
    the top level of last.pt, beside an unused ``hooks``: the default method resumes from it."""
    reference = make_trainer(tmp_path / "ref", PlainMethod)
    reference.fit()
    with pytest.raises(TrainingInterrupted):
        make_trainer(tmp_path / "run", TigerStoppedAt13).fit()
    path = tmp_path / "run" / "ckpt" / "last.pt"
    ckpt = torch.load(path, weights_only=False)
    ckpt.update(ckpt.pop("method"), hooks={}, format=1)
    torch.save(ckpt, path)
    resumed = make_trainer(tmp_path / "run", PlainMethod, init_seed=5)
    resumed.fit()
    assert resumed.resumed_from is not None and resumed.state.evals == reference.state.evals
    a, b = reference.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- registry and params


def test_the_registry_finds_methods_by_name():
    assert method_class("tiger") is PlainMethod and METHODS["toy"] is ToyMethod
    assert isinstance(build_method("tiger", {}, context()), PlainMethod)
    with pytest.raises(ParamError, match="recommender.method.*unknown method 'mtgrec_typo'"):
        build_method("mtgrec_typo", {}, context())
    with pytest.raises(ValueError, match="registered twice"):
        register_method("toy")(ToyMethod)


@pytest.mark.parametrize(
    ("name", "given", "param"),
    [
        ("toy", {"aux_wieght": 0.1}, "recommender.method_params.aux_wieght"),  # unknown key
        ("toy", {"aux_weight": "big"}, "recommender.method_params.aux_weight"),  # wrong type
        ("toy", {"second_tokenizer_prob": 1.5}, "recommender.method_params.second_tokenizer_prob"),  # out of range
        ("tiger", {"anything": 1}, "recommender.method_params.anything"),  # tiger takes none
    ],
)
def test_method_params_are_validated_like_loss_params(name, given, param):
    with pytest.raises(ParamError, match=param.replace(".", r"\.")):
        check_method_params(name, given)
    with pytest.raises(ParamError, match=param.replace(".", r"\.")):
        build_method(name, given, context())


def test_method_params_fill_defaults_and_accept_ints_for_floats():
    assert check_method_params("toy", {"aux_weight": 1}) == {"aux_weight": 1.0, "second_tokenizer_prob": 0.5, "aux_lr": 0.05, "seed": 0}
    assert check_method_params("tiger", None) == {}


def test_method_and_method_params_in_params_yaml_and_overlays(tmp_path):
    params = load_params(None, ["recommender.method=toy", 'recommender.method_params={"aux_weight":0.5}'])
    assert params.recommender.method == "toy" and params.recommender.method_params == {"aux_weight": 0.5}
    assert load_params(None).recommender.method == "plain" and load_params(None).recommender.method_params == {}
    with pytest.raises(ParamError, match="recommender.method_params"):
        load_params(None, ["recommender.method_params=3"])
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("recommender:\n  method: toy\n  method_params: {aux_weight: 0.5, seed: 3}\n")
    assert flatten_overlay(overlay) == ["recommender.method=toy", 'recommender.method_params={"aux_weight":0.5,"seed":3}']


def test_the_fingerprint_ignores_the_default_method_only():
    from genrec_core.config import Params
    from genrec_core.recommender.fingerprint import fingerprint

    default, info = fingerprint(Params(), "epoch_0001", {})
    assert "recommender.method" not in info and "recommender.method_params" not in info
    other = Params()
    other.recommender.method = "toy"
    digest, info = fingerprint(other, "epoch_0001", {})
    assert info["recommender.method"] == "toy" and digest != default
    other.recommender.method_params = {"seed": 1}
    assert fingerprint(other, "epoch_0001", {})[1]["recommender.method_params"] == {"seed": 1}


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_loss_reports_per_example_terms_whose_mean_is_the_loss(loss):
    """The scalar the default method back-propagates is the mean of ``per_example`` (up to rounding)."""
    from genrec_core.recommender.losses import LossStrategy

    torch.manual_seed(0)
    tokens = TABLES[0]
    rng = np.random.default_rng(0)
    ctx = LossContext(
        VOCAB, tokens, target_counts=rng.integers(1, 9, N_ITEMS), item_vectors=lambda: rng.normal(size=(N_ITEMS, 4)) + CODES[:, :1], total_steps=20
    )
    strategy: LossStrategy = build_loss(loss, {}, ctx)
    strategy.on_step(7, 20)
    batch = SequenceEncoder(tokens, "items").collate(examples_from_frame(FRAMES["train"]), np.arange(6))
    logits = torch.randn(6, 3, VOCAB.size, requires_grad=True)
    extra = torch.randn(6, 3, VOCAB.size) if strategy.extra_forward_needed else None
    out = strategy(logits, batch.labels, batch, None, extra_logits=extra)
    assert out.per_example.shape == (6,) and out.terms and all(t.shape == (6,) for t in out.terms.values())
    torch.testing.assert_close(out.per_example.mean(), out.loss)
    next(iter(out.terms.values()))[:2].sum().backward()  # any term, any subset: a gradient
    assert logits.grad is not None and logits.grad[2:].abs().sum() == 0 and logits.grad[:2].abs().sum() > 0
