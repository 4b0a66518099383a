"""Tiny deterministic training runs whose exact outputs are kept in ``tests/data/reference_runs.json``.

The file was written by this script (then recording through ``TrainerHooks``) before the method
registry replaced those hooks (issue 11); it guards that the default training
(``recommender.method: tiger``, every loss, every model) stays bit-identical: per-step losses and logged values (as ``float.hex``), a sha256 of every final
parameter, the validation metrics per epoch and a sha256 of the ranked test lists.
``tests/test_reference_runs.py`` reruns each case and compares.

    python tests/reference_runs.py            # rewrite tests/data/reference_runs.json
    python tests/reference_runs.py --check    # compare without writing (exit 1 on a difference)

Exact floats depend on the torch build and the CPU's kernels: the file records the torch version it
was written with, and the test skips (saying so) under another one. One thread throughout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # run as a script: helpers.py sits beside this file
    sys.path.insert(0, str(HERE))

from helpers import next_item_pattern_splits  # noqa: E402

FIXTURE = HERE / "data" / "reference_runs.json"
N_ITEMS = 40
MAX_LEN = 5
CODES = np.stack([np.arange(N_ITEMS) // 8, np.arange(N_ITEMS) % 8], axis=1)
TINY = dict(
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
    epochs=2,
    patience=10,
    eval_beam_size=5,
    eval_batch_size=16,
    log_every=1,
    threads=1,
    device="cpu",
)

#: name -> (recommender params beyond TINY). Every loss, both encoder inputs, history dropout, user
#: tokens, level softmax, no clipping, the decoder-only model, SASRec (ce, bce) and GRU4Rec.
CASES: dict[str, dict[str, Any]] = {
    "t5_ce_tokens": dict(loss="ce"),
    "t5_ce_items_dropout_users_levels": dict(encoder_input="items", history_dropout=0.3, user_tokens=4, level_softmax=True),
    "t5_ce_noclip_constant": dict(encoder_input="items", grad_clip=0.0, lr_schedule="constant"),
    "t5_pos": dict(encoder_input="items", loss="pos", loss_params={"beta_pos": 0.3, "eos": "exclude"}),
    "t5_cft": dict(encoder_input="items", loss="cft", loss_params={"alpha": 0.2}),
    "t5_rank": dict(encoder_input="items", loss="rank"),
    "t5_igd": dict(encoder_input="items", loss="igd"),
    "t5_front_greater": dict(encoder_input="items", loss="front_greater"),
    "t5_frequency": dict(encoder_input="items", loss="frequency"),
    "t5_fg_to_ce": dict(encoder_input="items", loss="fg_to_ce"),
    "t5_fg_ce_fr": dict(encoder_input="items", loss="fg_ce_fr"),
    "t5_multi_target": dict(encoder_input="items", loss="multi_target", loss_params={"regulariser": "uncertainty"}),
    "t5_curriculum": dict(encoder_input="items", loss="curriculum", loss_params={"half_life": 0.25}),
    "decoder_only_ce": dict(model="decoder_only", loss="ce", user_tokens=3),
    "decoder_only_cft_items": dict(model="decoder_only", encoder_input="items", loss="cft", level_softmax=True),
    "sasrec_ce": dict(model="sasrec", num_layers=2, eval_beam_size=10),
    "sasrec_bce": dict(model="sasrec", loss="bce", eval_beam_size=10),
    "gru4rec_ce": dict(model="gru4rec", eval_beam_size=10),
}


def frames():
    return next_item_pattern_splits(N_ITEMS, MAX_LEN, 24, 8, 0)


def tensor_digest(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous()
    return f"{t.dtype}:{tuple(t.shape)}:" + hashlib.sha256(t.numpy().tobytes()).hexdigest()[:32]


def to_plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().item()
    return float(value).hex()


def _run(name: str, tmp: Path) -> dict[str, Any]:
    from genrec_core.config import RecommenderParams
    from genrec_core.methods import MethodContext
    from genrec_core.methods.plain import PlainMethod
    from genrec_core.recommender.data import SequenceEncoder, examples_from_frame
    from genrec_core.recommender.interface import rank_examples
    from genrec_core.recommender.losses import LossContext, build_loss
    from genrec_core.recommender.model import build_generative_model
    from genrec_core.recommender.trainer import Trainer
    from genrec_core.recommender.vocab import SemanticIdVocab
    from genrec_core.runtime import seed_everything
    from genrec_core.sequential.models import build_model
    from genrec_core.sequential.training import ItemIdEncoder, SequentialLoss

    params = RecommenderParams(**{**TINY, **CASES[name]})
    params.validate()
    data = {k: examples_from_frame(v) for k, v in frames().items()}
    steps: list[dict[str, Any]] = []

    class Recorder(PlainMethod):  # the default method, recording each step's loss and logs
        def on_step_end(self, trainer, batch, out):
            super().on_step_end(trainer, batch, out)
            steps.append({"loss": to_plain(out.loss), **{k: to_plain(v) for k, v in sorted(out.logs.items())}})

    seed_everything(0)
    common = dict(checkpoint_dir=tmp / "ckpt", reports_dir=tmp / "reports", seed=0, fingerprint="fp", device="cpu", progress=False, use_dvclive=False)
    if params.model in ("sasrec", "gru4rec"):
        model = build_model(params.model, N_ITEMS, MAX_LEN, params)
        encoder = ItemIdEncoder(N_ITEMS)
        trainer = Trainer(model, params, Recorder(MethodContext(encoder, SequentialLoss(params.loss))), data["train"], data["valid"], **common)
        trainer.fit()
        items, scores = rank_examples(trainer.model, data["test"], encoder.collate, 10, 16)
    else:
        vocab = SemanticIdVocab.from_codes([CODES])
        tokens = torch.from_numpy(vocab.codes_to_tokens(CODES))
        rng = np.random.default_rng(1)
        vectors = rng.normal(size=(N_ITEMS, 6)) + CODES[:, :1]
        context = LossContext(
            vocab,
            tokens,
            target_counts=np.bincount(data["train"].targets, minlength=N_ITEMS),
            item_vectors=lambda: vectors,
            total_steps=params.epochs * -(-len(data["train"]) // params.batch_size),
        )
        loss = build_loss(params.loss, params.loss_params, context)
        model = build_generative_model(params, vocab)
        encoder = SequenceEncoder(tokens, params.encoder_input, user_buckets=params.user_tokens, user_token_offset=vocab.size)
        trainer = Trainer(model, params, Recorder(MethodContext(encoder, loss)), data["train"], data["valid"], **common)
        trainer.fit()
        items, scores = rank_examples(trainer.model, data["test"], encoder.collate, 5, 16)
    state = {
        **{f"model.{k}": v for k, v in trainer.model.state_dict().items()},
        **{f"loss.{k}": v for k, v in trainer.method.loss_strategy.state_dict().items() if isinstance(v, torch.Tensor)},
    }
    return {
        "steps": steps,
        "parameters": {k: tensor_digest(v) for k, v in state.items()},
        "evals": trainer.state.evals,
        "best_epoch": trainer.state.best_epoch,
        "test_items": tensor_digest(torch.from_numpy(np.ascontiguousarray(items))),
        "test_scores": tensor_digest(torch.from_numpy(np.ascontiguousarray(scores))),
    }


def record(name: str) -> dict[str, Any]:
    """The outputs of case ``name`` (one thread; the caller's thread count restored)."""
    threads = torch.get_num_threads()
    try:
        with tempfile.TemporaryDirectory(prefix=f"genrec-ref-{name}-") as tmp:
            return _run(name, Path(tmp))
    finally:
        torch.set_num_threads(threads)


def cpu_signature() -> str:
    """The CPU's model name and the vector instructions torch uses: floats are bit-identical only
    on the same build and the same kind of CPU (another machine of the same torch differs in the
    low bits)."""
    import platform

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} / {torch.backends.cpu.get_cpu_capability()}"


def environment() -> dict[str, str]:
    return {"torch": torch.__version__, "cpu": cpu_signature()}


def default_fingerprint() -> str:
    """The checkpoint fingerprint of the default params (new params at their defaults must not change it)."""
    from genrec_core.config import Params
    from genrec_core.recommender.fingerprint import fingerprint

    return fingerprint(Params(), "epoch_0001", {})[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the fixture instead of writing it")
    ap.add_argument("cases", nargs="*", help="only these cases (default: all)")
    args = ap.parse_args()
    names = args.cases or list(CASES)
    runs = {name: record(name) for name in names}
    if args.check:
        saved = json.loads(FIXTURE.read_text(encoding="utf-8"))
        bad = [n for n in names if saved["runs"].get(n) != runs[n]]
        if saved["default_fingerprint"] != default_fingerprint():
            bad.append("default_fingerprint")
        print("identical" if not bad else f"differ: {', '.join(bad)}")
        return 1 if bad else 0
    if args.cases and FIXTURE.exists():  # update some cases, keep the others
        saved = json.loads(FIXTURE.read_text(encoding="utf-8"))
        runs = {**saved["runs"], **runs}
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(
        json.dumps({"environment": environment(), "default_fingerprint": default_fingerprint(), "runs": runs}, indent=1, sort_keys=True) + "\n",
        encoding="utf-8",
    )
    print(f"wrote {FIXTURE} ({len(runs)} cases)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
