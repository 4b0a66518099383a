"""The recommender checkpoint format (``recommender/checkpoint_format.py``): the keys of last.pt and
best.pt, equal checkpoints as equal bytes, the weights_only read, the format-1 alias.

The trainer's own round trips (resume bit-identical, foreign checkpoints refused) are in
tests/test_trainer.py; here the format is checked against values written out by hand.
"""

from __future__ import annotations

import pytest
import torch

from genrec_core.errors import GenrecError, InputFormatError
from genrec_core.recommender import checkpoint_format as fmt


def _last(path, **kw):
    args = dict(
        fingerprint="fp",
        fingerprint_info={"a": 1},
        model={"w": torch.arange(3.0)},
        method={"optimizer": {"lr": 0.1}},
        state={"epoch": 2},
        sampler={"epoch": 2},
        rng={"torch": torch.zeros(2, dtype=torch.uint8)},
    )
    args.update(kw)
    return fmt.write_last(path, **args)


def test_last_pt_holds_the_documented_keys_in_order_and_item_tokens_only_when_given(tmp_path):
    plain = torch.load(_last(tmp_path / "a.pt"), weights_only=True)
    assert list(plain) == ["format", "fingerprint", "fingerprint_info", "model", "method", "state", "sampler", "rng"]
    assert plain["format"] == 2 and plain["fingerprint"] == "fp" and torch.equal(plain["model"]["w"], torch.tensor([0.0, 1.0, 2.0]))
    tokens = torch.tensor([[1, 2], [3, 4]])
    changed = torch.load(_last(tmp_path / "b.pt", item_tokens=tokens), weights_only=True)
    assert list(changed)[-1] == "item_tokens" and torch.equal(changed["item_tokens"], tokens)


def test_best_pt_is_the_runs_record_then_the_model_description(tmp_path):
    tokens = torch.tensor([[5, 6]])
    meta = fmt.generative_meta({"model": "tiger"}, {"level_sizes": [4]}, "rqvae", tokens, epochs_auto=7)
    path = fmt.write_best(tmp_path / "best.pt", fingerprint="fp", model={"w": torch.ones(1)}, epoch=3, step=30, valid={"ndcg@10": 0.5}, meta=meta)
    best = torch.load(path, weights_only=True)
    assert list(best) == ["format", "fingerprint", "model", "epoch", "step", "valid", "params", "vocab", "tokenizer", "item_tokens", "epochs_auto"]
    assert (best["epoch"], best["step"], best["valid"], best["tokenizer"]) == (3, 30, {"ndcg@10": 0.5}, "rqvae")
    assert torch.equal(fmt.read_item_tokens(path), tokens) and torch.equal(fmt.read_weights(path)["w"], torch.ones(1))
    assert fmt.missing_keys(best, fmt.GENERATIVE_KEYS) == []
    item_id = fmt.write_best(
        tmp_path / "sasrec.pt", fingerprint="fp", model={}, epoch=1, step=1, valid={}, meta=fmt.item_id_meta("sasrec", {"max_len": 20}, {"model": "sasrec"})
    )
    assert list(torch.load(item_id, weights_only=True))[6:] == ["model_kind", "config", "params"]
    with pytest.raises(InputFormatError, match="no item tokens"):
        fmt.read_item_tokens(item_id)


def test_equal_checkpoints_are_equal_bytes_and_a_write_replaces_the_file_whole(tmp_path):
    a, b = _last(tmp_path / "a.pt"), _last(tmp_path / "sub" / "b.pt")
    assert a.read_bytes() == b.read_bytes()
    _last(a, fingerprint="other")
    assert fmt.read_checkpoint(a)["fingerprint"] == "other"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "sub"]  # no temporary file left


def test_resumable_formats_and_the_format_1_alias_of_the_method_state():
    v2 = {"format": 2, "fingerprint": "fp", "method": {"optimizer": 1}}
    v1 = {"format": 1, "fingerprint": "fp", "optimizer": {"lr": 1}, "scheduler": {"s": 2}, "loss_strategy": None, "model": {}}
    assert fmt.resumable(v2, "fp") and fmt.resumable(v1, "fp")
    assert not fmt.resumable(v2, "other") and not fmt.resumable({**v2, "format": 3}, "fp") and not fmt.resumable({"fingerprint": "fp"}, "fp")
    assert fmt.method_state(v2) == {"optimizer": 1}
    assert fmt.method_state(v1) == {"optimizer": {"lr": 1}, "scheduler": {"s": 2}, "loss_strategy": None}


class _NotATensor:
    pass


def test_a_checkpoint_holding_arbitrary_objects_is_refused_not_run(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": 2, "payload": _NotATensor()}, path)
    with pytest.raises(fmt.UnsafeCheckpoint, match="weights_only") as err:
        fmt.read_checkpoint(path)
    assert isinstance(err.value, GenrecError) and err.value.path == path
    assert isinstance(torch.load(path, weights_only=False)["payload"], _NotATensor)  # refused for weights_only alone


def test_stored_params_come_back_as_recommender_params():
    assert fmt.stored_params({"params": {"model": "sasrec", "d_model": 16}}).d_model == 16
    assert fmt.stored_params({}, default_model="gru4rec").model == "gru4rec"
