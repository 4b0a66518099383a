"""``recommender.item_embedding``: a learned vector per item beside its semantic ID.

Checked against what the option promises: items are found from their token groups (and nothing
else is), a fresh model scores exactly as one without the option, the packed forward still equals
each example scored alone, gradients reach only the items of the histories, the vectors survive
a checkpoint, and the option is refused where it cannot find items.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_decoder_only import make_trainer, small_params
from test_packing import TOKENS, VOCAB, frame, model, windows

from genrec_core.config import Params, RecommenderParams
from genrec_core.errors import ParamError
from genrec_core.params_validation import validate_everything
from genrec_core.recommender.data import SequenceEncoder, examples_from_frame
from genrec_core.recommender.item_embedding import ItemEmbedding
from genrec_core.recommender.model import build_generative_model
from genrec_core.recommender.packing import linked_examples, pack_batch
from genrec_core.recommender.vocab import EOS, PAD
from genrec_core.training import resolve_item_embedding


def randomised(net, seed: int = 5):
    """Give every item its own non-zero vector (a fresh table is all zeros)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        table = net.item_embedding.table.weight
        table[1:] = torch.randn(table.shape[0] - 1, table.shape[1], generator=gen)
    return net


def test_groups_find_their_items_and_anything_else_gets_zero():
    emb = ItemEmbedding(4, VOCAB.size)
    emb.set_items(TOKENS)
    with torch.no_grad():
        emb.table.weight[1:] = torch.arange(1, TOKENS.shape[0] + 1, dtype=torch.float32)[:, None].expand(-1, 4)
    items = [7, 0, 29, 13]
    out = emb(TOKENS[items][None])  # [1, 4, L] -> [1, 4, d]
    assert out[0, :, 0].tolist() == [i + 1 for i in items]  # row = item id + 1
    eos_group = torch.tensor([[EOS, PAD, PAD]])
    pad_group = torch.full((1, 3), PAD)
    not_an_item = TOKENS[0].clone()
    not_an_item[2] = TOKENS[1, 2] if TOKENS[1, 2] != TOKENS[0, 2] else TOKENS[2, 2]
    assert not any(torch.equal(not_an_item, row) for row in TOKENS)
    with torch.no_grad():
        others = emb(torch.stack([eos_group[0], pad_group[0], not_an_item]))
    assert float(others.abs().sum()) == 0.0


def test_two_items_with_one_id_are_refused_and_the_table_grows_keeping_its_rows():
    emb = ItemEmbedding(2, VOCAB.size)
    with pytest.raises(ValueError, match="share one semantic ID"):
        emb.set_items(torch.cat([TOKENS, TOKENS[:1]]))
    emb.set_items(TOKENS[:10])
    with torch.no_grad():
        emb.table.weight[1:] = 1.0
    emb.set_items(TOKENS)  # 20 more items (a served model meets new ones): their rows start at zero
    assert emb.table.weight.shape[0] == TOKENS.shape[0] + 1
    with torch.no_grad():
        assert emb(TOKENS[:10]).eq(1.0).all() and float(emb(TOKENS[10:]).abs().sum()) == 0.0


def test_a_fresh_model_scores_as_one_without_the_option():
    ex = examples_from_frame(frame(windows(0, [3, 17, 8, 25, 1, 12], 10) + windows(1, [4, 9, 29, 2], 10)))
    batch = SequenceEncoder(TOKENS, "items").collate(ex, np.arange(len(ex)))
    plain, with_items = model(), model(item_embedding=True)
    with_items.set_items(TOKENS)
    with torch.no_grad():
        assert torch.equal(plain(batch.input_ids, batch.attention_mask, batch.labels), with_items(batch.input_ids, batch.attention_mask, batch.labels))


def test_packed_logits_still_equal_each_example_scored_alone():
    """test_packing's equality, with every item's vector non-zero."""
    rows = windows(0, [3, 17, 8, 25, 1, 12], 10) + windows(1, [4, 9, 29, 2], 10) + windows(2, [11, 5], 10)
    ex = examples_from_frame(frame(rows))
    enc = SequenceEncoder(TOKENS, "items")
    net = model(item_embedding=True)
    net.set_items(TOKENS)
    randomised(net)
    index = np.arange(len(ex))
    batch = enc.collate(ex, index)
    packing = pack_batch(ex, index, linked_examples(ex), 8, enc.item_tokens)
    with torch.no_grad():
        packed = net.packed_forward(packing, batch.labels)
        alone = torch.cat(
            [
                net(
                    batch.input_ids[i : i + 1, : int(batch.lengths[i]) + 1],
                    batch.attention_mask[i : i + 1, : int(batch.lengths[i]) + 1],
                    batch.labels[i : i + 1],
                )
                for i in range(len(ex))
            ]
        )
        without = model()(batch.input_ids, batch.attention_mask, batch.labels)
    torch.testing.assert_close(packed, alone, rtol=1e-4, atol=1e-4)
    assert float((alone - without).abs().max()) > 1e-3  # the vectors change the scores


def test_gradients_reach_only_the_items_of_the_histories():
    ex = examples_from_frame(frame(windows(0, [3, 17, 8], 10) + windows(1, [4, 9], 10)))
    batch = SequenceEncoder(TOKENS, "items").collate(ex, np.arange(len(ex)))
    net = model(item_embedding=True).train()
    net.set_items(TOKENS)
    randomised(net)
    net(batch.input_ids, batch.attention_mask, batch.labels).logsumexp(-1).sum().backward()
    grad = net.item_embedding.table.weight.grad
    touched = set(torch.nonzero(grad.abs().sum(dim=1)).flatten().tolist())
    assert touched == {3 + 1, 17 + 1, 4 + 1}  # history items only (targets 17, 8 and 9 are outputs), row = id + 1; row 0 never


def test_the_vectors_survive_a_checkpoint():
    rp = RecommenderParams(
        model="decoder_only", encoder_input="items", num_layers=1, num_decoder_layers=1, d_model=32, d_ff=64, num_heads=2, d_kv=16, item_embedding=True
    )
    net = randomised(build_generative_model(rp, VOCAB, TOKENS))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    assert state["item_embedding.table.weight"].shape == (TOKENS.shape[0] + 1, 32)
    again = build_generative_model(rp, VOCAB, TOKENS)
    again.load_state_dict(state)
    ex = examples_from_frame(frame(windows(0, [3, 17, 8, 25], 10)))
    batch = SequenceEncoder(TOKENS, "items").collate(ex, np.arange(len(ex)))
    with torch.no_grad():
        assert torch.equal(net.eval()(batch.input_ids, batch.attention_mask, batch.labels), again.eval()(batch.input_ids, batch.attention_mask, batch.labels))


def test_training_moves_the_trained_items_only(tmp_path):
    """The toy next-item pattern, packed: items that occur in training histories get vectors; the
    others keep zero (weight decay pulls toward it, no gradient pushes away)."""
    params = small_params(encoder_input="items", pack_examples=4, level_softmax=True, item_embedding=True, epochs=2)
    trainer = make_trainer(tmp_path, params)
    trainer.fit()
    table = trainer.model.item_embedding.table.weight.detach()
    norms = table.norm(dim=1)
    assert float(norms[0]) == 0.0
    assert int((norms[1:] > 0).sum()) > 10


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(model="t5"), "not available for model 't5'"),
        (dict(encoder_input="tokens", pack_examples=0), "needs encoder_input: items"),
        (dict(item_embedding="yes"), "must be true, false or auto"),
        (dict(method="mtgrec"), "mixes or changes the IDs"),
        (dict(method="bloger"), "mixes or changes the IDs"),
    ],
)
def test_the_option_is_refused_where_items_cannot_be_found(kw, needle):
    """At start (``validate_everything``, what every command runs): by name of the param."""
    rp = dict(model="decoder_only", encoder_input="items", item_embedding=True)
    rp.update(kw)
    with pytest.raises(ParamError, match="recommender.item_embedding") as err:
        validate_everything(Params(recommender=RecommenderParams(**rp)))
    assert needle in str(err.value)
    if kw.get("item_embedding") != "yes":
        validate_everything(Params(recommender=RecommenderParams(**{**rp, "item_embedding": "auto"})))  # auto: off there, no error


@pytest.mark.parametrize(
    "kw, on, why",
    [
        (dict(), True, "on (a learned vector per item"),
        (dict(method="tiger"), True, "on"),  # plain's old name
        (dict(method="mtgrec"), False, "method mtgrec mixes or changes the IDs"),
        (dict(method="bloger"), False, "method bloger mixes or changes the IDs"),
        (dict(model="t5"), False, "model t5 has none"),
        (dict(encoder_input="tokens", pack_examples=0), False, "encoder_input tokens"),
    ],
)
def test_auto_turns_it_on_where_items_can_be_found_and_says_why_not_elsewhere(kw, on, why):
    rp = RecommenderParams(**{**dict(model="decoder_only", encoder_input="items", item_embedding="auto"), **kw})
    resolved, line = resolve_item_embedding(rp)
    assert resolved.item_embedding is on and why in line
    assert resolve_item_embedding(resolved) == (resolved, None)  # a given value stays as it is
    sasrec, line = resolve_item_embedding(RecommenderParams(model="sasrec", item_embedding="auto"))
    assert sasrec.item_embedding is False and line is None  # item-ID models: nothing to say


def test_the_fingerprint_ignores_the_option_where_it_changes_nothing(tmp_path):
    """Off (or auto on a model without it, e.g. SASRec) is the training before the param: old
    last.pt files resume; on is another run."""
    from genrec_core.recommender.fingerprint import fingerprint

    def fp(**kw):
        return fingerprint(Params(recommender=RecommenderParams(**kw)), "t", {})[0]

    assert fp(model="sasrec", item_embedding="auto") == fp(model="sasrec", item_embedding=False) == fp(model="sasrec")
    assert fp(model="decoder_only", encoder_input="items", item_embedding=False) == fp(model="decoder_only", encoder_input="items")
    assert fp(model="decoder_only", encoder_input="items", item_embedding=True) != fp(model="decoder_only", encoder_input="items")


def test_a_finetune_slot_keeps_what_the_pre_training_had():
    """MTGRec's slots fine-tune with plain training; under auto they must stay without item vectors,
    as the pre-trained model whose weights they load."""
    from genrec_core.training import slot_finetune_recipe

    rp = RecommenderParams(model="decoder_only", encoder_input="items", item_embedding="auto", method="mtgrec")
    recipe = slot_finetune_recipe(rp)
    assert recipe.method == "plain" and recipe.item_embedding is False
    assert resolve_item_embedding(recipe) == (recipe, None)


def test_a_model_refuses_an_unresolved_auto():
    with pytest.raises(ValueError, match="resolve auto first"):
        model(item_embedding="auto")
