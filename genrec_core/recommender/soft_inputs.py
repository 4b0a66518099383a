"""Soft token inputs for the generative models (BLOGER's differentiable IDs, SPEC 8).

A tokenizer trained through the recommender's loss needs a gradient path from the recommender's
inputs back to the code probabilities. The models accept token *embeddings* instead of token ids
(``forward(..., inputs_embeds=, decoder_inputs_embeds=)``); this module builds them:

- ``distribution_embeds(dist, weight)``: token distributions [..., V] -> ``dist @ weight``; with
  one-hot distributions this is exactly ``weight[ids]`` (a sum of one product by 1.0 and zeros),
  so the soft path reproduces the hard path bit for bit;
- ``straight_through(soft, hard)``: forward value ``hard``, gradient of ``soft`` (SPEC 8's
  ``s + sg(h - s)``, written ``sg(h) + (s - sg(s))`` so the forward value is exactly ``h``
  rather than ``h`` up to rounding, with the same gradients: none to ``h``, identity to ``s``);
- ``level_soft_embeds(probs, weight, vocab)``: ``s_l = P_l @ E_l`` over level l's block of the
  shared embedding table;
- ``history_inputs_embeds`` / ``decoder_inputs_embeds``: a collated batch's encoder input and the
  decoder's teacher-forced inputs as embeddings, the item tokens straight-through (soft
  probabilities of their L code levels), everything else (pad, eos, user tokens, a dedup level)
  hard, as the SPEC says (labels stay hard: the loss reads ``batch.labels`` as before);
- ``packed_items_embeds``: the same for a packed batch's chunk items (``packing.Packing``), which
  the decoder-only ``packed_forward`` takes in place of ``inputs_embeds``.
"""

from __future__ import annotations

import torch

from genrec_core.recommender.vocab import PAD, SemanticIdVocab


def distribution_embeds(dist: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Token distributions [..., V] -> embeddings [..., d] (``dist @ weight``, weight [V, d])."""
    return dist.to(weight.dtype) @ weight


def one_hot_embeds(token_ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Hard tokens as one-hot distributions, embedded: equal to ``weight[token_ids]``."""
    return distribution_embeds(torch.nn.functional.one_hot(token_ids, weight.shape[0]).to(weight.dtype), weight)


def straight_through(soft: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    """Forward value ``hard`` exactly, gradient flowing to ``soft`` only (SPEC 8: s + sg(h - s))."""
    return hard.detach() + (soft - soft.detach())


def level_soft_embeds(probs: torch.Tensor, weight: torch.Tensor, vocab: SemanticIdVocab) -> torch.Tensor:
    """Code probabilities [..., L, K] -> soft embeddings [..., L, d]: level l's probabilities
    times level l's block of the embedding table (``K`` must equal each level's size: a
    codebook-sized vocabulary, ``SemanticIdVocab.from_codebook``)."""
    levels = probs.shape[-2]
    offsets = vocab.level_offsets.tolist()
    out = []
    for level in range(levels):
        size = vocab.level_sizes[level]
        if probs.shape[-1] != size:
            raise ValueError(f"level {level + 1}: {probs.shape[-1]} code probabilities, the vocabulary has {size} tokens")
        out.append(probs[..., level, :].to(weight.dtype) @ weight[offsets[level] : offsets[level] + size])
    return torch.stack(out, dim=-2)


def item_token_embeds(probs: torch.Tensor, hard_tokens: torch.Tensor, weight: torch.Tensor, vocab: SemanticIdVocab) -> torch.Tensor:
    """Straight-through embeddings [..., L', d] of items with hard tokens [..., L'] and code
    probabilities [..., L, K] (L <= L'; levels past L, e.g. the dedup level, stay hard)."""
    hard = weight[hard_tokens]
    levels = probs.shape[-2]
    st = straight_through(level_soft_embeds(probs, weight, vocab), hard[..., :levels, :])
    return torch.cat([st, hard[..., levels:, :]], dim=-2) if hard.shape[-2] > levels else st


def history_inputs_embeds(
    input_ids: torch.Tensor, history: torch.Tensor, lengths: torch.Tensor, history_probs: torch.Tensor, weight: torch.Tensor, vocab: SemanticIdVocab
) -> torch.Tensor:
    """The encoder input of a collated batch as embeddings, history items straight-through.

    ``input_ids``: the batch's [B, S] (``tokens``) or [B, S, L'] (``items``) ids, as
    ``SequenceEncoder`` builds them (an optional user token first, then the history, then eos);
    ``history`` [B, H] (-1 = pad) and ``lengths`` [B]: the batch's items; ``history_probs``
    [B, H, L, K]: each history item's code probabilities. Returns [B, S, d] or [B, S, L', d]
    (for the models' ``inputs_embeds``); its forward value equals the hard embeddings exactly.
    """
    hard = weight[input_ids]
    b, h = history.shape
    length_l = vocab.id_length
    valid = history >= 0  # [B, H]
    if input_ids.dim() == 2:  # tokens: item j's level l at position lead + j * L' + l
        lead = input_ids.shape[1] - (h * length_l + 1)
        if lead not in (0, 1):
            raise ValueError(f"input of {input_ids.shape[1]} tokens does not fit {h} history items of {length_l} tokens")
        tokens = input_ids[:, lead : lead + h * length_l].reshape(b, h, length_l)
        items = item_token_embeds(history_probs, tokens, weight, vocab).reshape(b, h * length_l, -1)
        mask = valid.repeat_interleave(length_l, dim=1).unsqueeze(-1)
        middle = torch.where(mask, items, hard[:, lead : lead + h * length_l])
        return torch.cat([hard[:, :lead], middle, hard[:, lead + h * length_l :]], dim=1)
    lead = input_ids.shape[1] - (h + 1)  # items: item j at group lead + j
    if lead not in (0, 1):
        raise ValueError(f"input of {input_ids.shape[1]} groups does not fit {h} history items")
    items = item_token_embeds(history_probs, input_ids[:, lead : lead + h], weight, vocab)
    middle = torch.where(valid[:, :, None, None], items, hard[:, lead : lead + h])
    return torch.cat([hard[:, :lead], middle, hard[:, lead + h :]], dim=1)


def packed_items_embeds(items: torch.Tensor, item_mask: torch.Tensor, item_probs: torch.Tensor, weight: torch.Tensor, vocab: SemanticIdVocab) -> torch.Tensor:
    """The chunk items of a packed batch as embeddings [G, C, L', d], straight-through: ``items``
    [G, C, L'] (``Packing.items``), ``item_mask`` [G, C], ``item_probs`` [G, C, L, K] each chunk
    item's code probabilities. Padding stays hard (no gradient); the forward value equals the
    hard embeddings exactly."""
    hard = weight[items]
    return torch.where(item_mask[..., None, None], item_token_embeds(item_probs, items, weight, vocab), hard)


def decoder_inputs_embeds(labels: torch.Tensor, target_probs: torch.Tensor, weight: torch.Tensor, vocab: SemanticIdVocab) -> torch.Tensor:
    """The teacher-forced decoder inputs [B, L' + 1, d] for ``labels`` [B, L' + 1] (target tokens,
    then eos): the start token PAD, then the target's tokens straight-through (``target_probs``
    [B, L, K]); the forward value equals the embeddings of the shifted labels exactly."""
    start = weight[torch.full_like(labels[:, :1], PAD)]
    target = item_token_embeds(target_probs, labels[:, :-1], weight, vocab)
    return torch.cat([start, target], dim=1)
