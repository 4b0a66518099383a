"""A tiny training run for tests/test_distributed.py, launched under torchrun (or plainly: one process).

``python tests/ddp_worker.py KIND WORKDIR``: trains ``KIND`` (tiger: the T5; sasrec; decoder_only:
packed; mtgrec: MTGRec over 3 ID tables, one stage end) on the synthetic pattern data of tests/test_trainer.py with dropout 0 and writes the
final weights to ``WORKDIR/weights.pt`` (rank 0; mtgrec: every rank also its tokenizer
distribution p and drawn counts to ``WORKDIR/p_rank<r>.npy``). ``DDP_TEST_STOP_AT=k``: the last rank receives
a SIGTERM after optimiser step k (exit status 3 after the interrupt). ``DDP_TEST_DVCLIVE=1``: log
with dvclive.
``DDP_TEST_AUDIT=1``: ranks > 0 raise on any write. ``DDP_TEST_LOSS``: the generative models' loss
strategy (default ce; cft: a second forward pass through the DDP wrapper in each step).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # helpers

from helpers import next_item_pattern_splits  # noqa: E402

from genrec_core.config import RecommenderParams  # noqa: E402
from genrec_core.methods import MethodContext  # noqa: E402
from genrec_core.methods.plain import PlainMethod  # noqa: E402
from genrec_core.recommender import distributed  # noqa: E402
from genrec_core.recommender.data import SequenceEncoder, examples_from_frame  # noqa: E402
from genrec_core.recommender.trainer import Trainer, TrainingInterrupted  # noqa: E402
from genrec_core.runtime import seed_everything  # noqa: E402

N_ITEMS = 40
#: MTGRec: one stage end, after epoch 1 of 2
MTGREC_STAGES = {"warmup": 1.0, "stage_length": 1.0, "schedule_unit": "epochs"}
STOP_AT = int(os.environ.get("DDP_TEST_STOP_AT", "0"))


class StopAt(PlainMethod):
    """The default method; the last rank gets a SIGTERM after step ``STOP_AT`` (the others must follow)."""

    def on_step_end(self, trainer, batch, out):
        super().on_step_end(trainer, batch, out)
        if STOP_AT and trainer.state.step == STOP_AT and distributed.rank() == distributed.world_size() - 1:
            trainer.handle_signal(signal.SIGTERM, None)


def params(kind: str) -> RecommenderParams:
    base = dict(
        num_layers=1,
        num_decoder_layers=1,
        d_model=32,
        d_ff=64,
        num_heads=2,
        d_kv=16,
        dropout=0.0,
        lr=0.01,
        warmup_steps=3,
        batch_size=25,
        epochs=2,
        patience=10,
        eval_beam_size=10,
        eval_batch_size=32,
        log_every=3,
        max_eval_users=20,
        threads=1,
    )
    if kind == "decoder_only":
        base.update(model="decoder_only", encoder_input="items", pack_examples=3)
    if kind == "mtgrec":
        base.update(encoder_input="items", method="mtgrec", method_params=MTGREC_STAGES)
    return RecommenderParams(**base)


def build(kind: str, workdir: Path) -> Trainer:
    frames = next_item_pattern_splits(N_ITEMS, 5, 60, 8, 0)
    rp = params(kind)
    seed_everything(0)
    method = None
    if kind == "sasrec":
        from genrec_core.sequential.models import SASRec
        from genrec_core.sequential.training import ItemIdEncoder, SequentialLoss

        model = SASRec(N_ITEMS, 5, d_model=rp.d_model, num_layers=rp.num_layers, num_heads=rp.num_heads, d_ff=rp.d_ff, dropout=rp.dropout)
        context = MethodContext(ItemIdEncoder(N_ITEMS), SequentialLoss("ce"))
    else:
        from genrec_core.recommender.losses import LossContext, build_loss
        from genrec_core.recommender.model import build_generative_model
        from genrec_core.recommender.vocab import SemanticIdVocab

        codes = np.stack([np.arange(N_ITEMS) // 8, np.arange(N_ITEMS) % 8], axis=1)
        vocab = SemanticIdVocab.from_codes([codes])
        tokens = torch.from_numpy(vocab.codes_to_tokens(codes))
        if kind == "mtgrec":
            from genrec_core.methods.mtgrec import MTGRecMethod

            all_codes = [codes, codes[np.random.default_rng(3).permutation(N_ITEMS)], codes[np.random.default_rng(4).permutation(N_ITEMS)]]
            vocab = SemanticIdVocab.from_codes(all_codes)
            tables = torch.from_numpy(np.stack([vocab.codes_to_tokens(c) for c in all_codes]))
            model = build_generative_model(rp, vocab, tables[0])
            context = MethodContext(SequenceEncoder(tables, rp.encoder_input, default_tokenizer=0), build_loss("ce", {}, LossContext(vocab, tables[0])))
            method = MTGRecMethod(context, **MTGREC_STAGES)
        else:
            model = build_generative_model(rp, vocab, tokens)
            context = MethodContext(
                SequenceEncoder(tokens, rp.encoder_input), build_loss(os.environ.get("DDP_TEST_LOSS", "ce"), {}, LossContext(vocab, tokens))
            )
    return Trainer(
        model,
        rp,
        method or StopAt(context),
        examples_from_frame(frames["train"]),
        examples_from_frame(frames["valid"]),
        checkpoint_dir=workdir / "ckpt",
        reports_dir=workdir / "reports",
        seed=0,
        fingerprint="fp",
        fingerprint_info={"fp": "fp"},
        device="cpu",
        progress=False,
        use_dvclive=os.environ.get("DDP_TEST_DVCLIVE") == "1",
    )


def forbid_writes_off_rank_0() -> None:
    """``DDP_TEST_AUDIT=1``: on ranks > 0 every project write (``genrec_core.io.atomic_path``,
    behind save_torch/write_json/write_text) and dvclive raise, so a stray write fails the run."""
    if distributed.is_main():
        return
    import dvclive

    import genrec_core.io as io

    def refuse(*args, **kwargs):
        raise AssertionError(f"rank {distributed.rank()} tried to write {args[:1]}")

    io.atomic_path = refuse
    dvclive.Live = refuse


def main() -> int:
    kind, workdir = sys.argv[1], Path(sys.argv[2])
    if os.environ.get("DDP_TEST_AUDIT") == "1":
        forbid_writes_off_rank_0()
    trainer = build(kind, workdir)
    try:
        trainer.fit()
    except TrainingInterrupted:
        return 3
    if kind == "mtgrec":
        np.save(workdir / f"p_rank{distributed.rank()}.npy", np.concatenate([trainer.method.p, trainer.method.counts]))
    if trainer.is_main:
        torch.save(trainer.model.state_dict(), workdir / "weights.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
