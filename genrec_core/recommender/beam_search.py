"""Trie-constrained beam search over item IDs, hand-batched for speed (SPEC section 4, inference).

HF ``generate()`` spends about half its time reordering the cross-attention cache of every beam
at every step. Here the decoder step is written out over the HF module's own weights so that:

- the encoder runs once per user, and each decoder layer's cross-attention keys/values are
  projected once per user ([B, H, S, dk]); a user's K beams are that layer's K queries, so cross
  attention is one [B, H, K, S] matmul with no copy per beam and nothing to reorder;
- only the self-attention cache (at most L positions) is reordered by beam choice;
- every step scores all candidates of all beams of all users at once: the beam's trie node gives
  its children (a CSR run, see ``trie.py``), the full-vocabulary log-softmax gives their true
  log-probs, and one top-k per user picks the next beams. The first step expands only the valid
  first tokens, so no invalid ID can ever be produced.

The step mirrors ``transformers.models.t5.modeling_t5`` exactly: RMS layer norms, no scaling of
attention scores, the decoder's relative position bias (computed by block 0, shared by all
blocks), cross attention without position bias, dropout off, and the lm head's ``d_model**-0.5``
scaling of tied-embedding models. It runs under a caller's CUDA autocast (bf16/fp16) as is;
``amp_dtype`` turns one on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from genrec_core.recommender.trie import ItemTrie
from genrec_core.recommender.vocab import PAD
from genrec_core.runtime import eval_mode


@dataclass
class BeamSearchResult:
    """Top items per user, best first: ``items`` [B, beam] (-1 where fewer exist), ``scores`` [B, beam].

    A score is the sum of the log-probs of the item's L tokens (-inf where ``items`` is -1).
    """

    items: torch.Tensor
    scores: torch.Tensor


class CachedT5Decoder:
    """One-token-at-a-time T5 decoder for K beams per user, sharing each user's cross-attention K/V.

    ``step(tokens [B, K])`` feeds the next decoder input of every beam and returns the logits
    [B, K, V] of the token after it; ``reorder(parent [B, K'])`` makes beam j of user b continue
    beam ``parent[b, j]`` (the self-attention cache follows; the cross-attention one never moves).
    """

    def __init__(self, t5: nn.Module, encoder_hidden: torch.Tensor, attention_mask: torch.Tensor, max_steps: int):
        config = t5.config
        self.t5 = t5
        self.blocks = list(t5.decoder.block)
        self.num_heads = config.num_heads
        self.d_kv = config.d_kv
        # transformers 5 keeps the tied-embedding output scaling under this name; older ones use tie_word_embeddings.
        self.scale = config.d_model**-0.5 if getattr(config, "scale_decoder_outputs", config.tie_word_embeddings) else None
        batch, src_len, _ = encoder_hidden.shape
        self.batch = batch
        self.cross_kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        for block in self.blocks:
            attn = block.layer[1].EncDecAttention
            k = attn.k(encoder_hidden).view(batch, src_len, self.num_heads, self.d_kv).transpose(1, 2)
            v = attn.v(encoder_hidden).view(batch, src_len, self.num_heads, self.d_kv).transpose(1, 2)
            self.cross_kv.append((k, v))  # [B, H, S, dk]
        self.cross_pad = (attention_mask == 0)[:, None, None, :]  # [B, 1, 1, S]: masked encoder positions
        # Relative position bias of the decoder (unidirectional buckets), rows = query position: [H, T, T].
        self.position_bias = self.blocks[0].layer[0].SelfAttention.compute_bias(max_steps, max_steps, device=encoder_hidden.device)[0]
        self.self_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.blocks)  # [B, K, H, t, dk]
        self.steps = 0

    def _self_attention(self, i: int, normed: torch.Tensor) -> torch.Tensor:
        attn = self.blocks[i].layer[0].SelfAttention
        b, k, _ = normed.shape
        shape = (b, k, self.num_heads, 1, self.d_kv)
        q = attn.q(normed).view(shape)
        key = attn.k(normed).view(shape)
        value = attn.v(normed).view(shape)
        cached = self.self_kv[i]
        if cached is not None:
            key = torch.cat([cached[0], key], dim=3)
            value = torch.cat([cached[1], value], dim=3)
        self.self_kv[i] = (key, value)
        t = self.steps
        scores = torch.matmul(q, key.transpose(-1, -2))  # [B, K, H, 1, t+1]; T5 does not scale scores
        scores = scores + self.position_bias[:, t : t + 1, : t + 1]
        weights = torch.softmax(scores, dim=-1)
        out = torch.matmul(weights, value)  # [B, K, H, 1, dk]
        return attn.o(out.reshape(b, k, self.num_heads * self.d_kv))

    def _cross_attention(self, i: int, normed: torch.Tensor) -> torch.Tensor:
        attn = self.blocks[i].layer[1].EncDecAttention
        b, k, _ = normed.shape
        q = attn.q(normed).view(b, k, self.num_heads, self.d_kv).transpose(1, 2)  # [B, H, K, dk]: beams = queries
        key, value = self.cross_kv[i]
        scores = torch.matmul(q, key.transpose(-1, -2))  # [B, H, K, S]
        scores = scores.masked_fill(self.cross_pad, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)
        out = torch.matmul(weights, value)  # [B, H, K, dk]
        return attn.o(out.transpose(1, 2).reshape(b, k, self.num_heads * self.d_kv))

    @staticmethod
    def _clamp_fp16(hidden: torch.Tensor) -> torch.Tensor:
        """T5's guard against fp16 overflow, as in HF's T5Block."""
        if hidden.dtype != torch.float16:
            return hidden
        big = torch.finfo(hidden.dtype).max
        clamp = torch.where(torch.isinf(hidden).any(), big - 1000, big)
        return torch.clamp(hidden, min=-clamp, max=clamp)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.steps >= self.position_bias.shape[-1]:
            raise RuntimeError(f"decoder stepped past its {self.position_bias.shape[-1]} positions")
        hidden = self.t5.decoder.embed_tokens(tokens)  # [B, K, d]
        for i, block in enumerate(self.blocks):
            hidden = self._clamp_fp16(hidden + self._self_attention(i, block.layer[0].layer_norm(hidden)))
            hidden = self._clamp_fp16(hidden + self._cross_attention(i, block.layer[1].layer_norm(hidden)))
            hidden = self._clamp_fp16(block.layer[2](hidden))  # T5LayerFF: norm, MLP, residual
        hidden = self.t5.decoder.final_layer_norm(hidden)
        if self.scale is not None:
            hidden = hidden * self.scale
        self.steps += 1
        return self.t5.lm_head(hidden)

    def reorder(self, parent: torch.Tensor) -> None:
        rows = torch.arange(self.batch, device=parent.device)[:, None]
        self.self_kv = [None if kv is None else (kv[0][rows, parent], kv[1][rows, parent]) for kv in self.self_kv]


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _on_model_device(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, trie: ItemTrie, beam_size: int):
    """(device, trie, input_ids, attention_mask) on the model's device; checks ``beam_size``."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    device = _model_device(model)
    if trie.device != device:
        trie = trie.to(device)  # callers decoding many batches should move the trie once
    return device, trie, input_ids.to(device), attention_mask.to(device)


def _autocast(device: torch.device, amp_dtype: torch.dtype | None):
    """Autocast in ``amp_dtype`` on CUDA only (scores are summed in float32 either way)."""
    if amp_dtype is not None and device.type == "cuda":
        return torch.autocast(device_type=device.type, dtype=amp_dtype)
    return contextlib.nullcontext()


def _step_decoder(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, length: int):
    """What the search steps: a decoder-only model's own (prefix once, then a KV cache) or the
    T5's cached decoder over the encoded history."""
    make_decoder = getattr(model, "beam_decoder", None)
    if make_decoder is not None:
        return make_decoder(input_ids, attention_mask, max_steps=length)
    return CachedT5Decoder(model.t5, model.encode(input_ids, attention_mask), attention_mask, max_steps=length)


def constrained_beam_search(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    trie: ItemTrie,
    beam_size: int,
    *,
    amp_dtype: torch.dtype | None = None,
) -> BeamSearchResult:
    """The ``beam_size`` best items per user by beam search over the trie of valid IDs.

    ``model`` is a ``GenerativeRecommender`` (``encode`` + its ``t5``) or a model with
    ``beam_decoder(input_ids, attention_mask, max_steps)`` returning a decoder with
    ``CachedT5Decoder``'s ``step``/``reorder`` (``DecoderOnlyRecommender``); ``input_ids`` [B, S] or
    [B, S, L] and ``attention_mask`` [B, S] as for ``model.encode``. Exact (every item, true
    model order) when ``beam_size`` is at least the number of distinct (L-1)-token prefixes.
    ``amp_dtype`` (CUDA only): run under autocast in that dtype; scores are summed in float32.
    """
    device, trie, input_ids, attention_mask = _on_model_device(model, input_ids, attention_mask, trie, beam_size)
    length = trie.id_length
    with eval_mode(model), torch.inference_mode(), _autocast(device, amp_dtype):
        decoder = _step_decoder(model, input_ids, attention_mask, length)
        batch = input_ids.shape[0]
        nodes = torch.zeros(batch, 1, dtype=torch.long, device=device)  # every user starts at the root
        scores = torch.zeros(batch, 1, dtype=torch.float32, device=device)
        tokens = torch.full((batch, 1), PAD, dtype=torch.long, device=device)  # T5's decoder start token
        for depth in range(length):
            logits = decoder.step(tokens).float()  # [B, K, V]
            restrict = getattr(model, "restrict_logits", None)  # level_softmax: step `depth` sees its level only
            if restrict is not None:
                logits = restrict(logits.unsqueeze(-2), first_step=depth).squeeze(-2)
            log_probs = torch.log_softmax(logits, dim=-1)  # true log-probs of the model's own softmax
            width = trie.max_children[depth]
            child, valid = trie.children(nodes, width)  # [B, K, W]
            child_token = torch.where(valid, trie.node_token[child], torch.zeros_like(child))
            candidates = scores.unsqueeze(-1) + log_probs.gather(-1, child_token)
            candidates = candidates.masked_fill(~valid, float("-inf")).view(batch, -1)
            scores, flat = candidates.topk(min(beam_size, candidates.shape[1]), dim=1)  # sorted, best first
            alive = scores > float("-inf")
            nodes = torch.where(alive, child.view(batch, -1).gather(1, flat), torch.full_like(flat, -1))
            tokens = torch.where(alive, child_token.view(batch, -1).gather(1, flat), torch.full_like(flat, PAD))
            if depth + 1 < length:
                decoder.reorder(flat // width)
        items = trie.leaf_to_item(nodes)
        missing = beam_size - items.shape[1]
        if missing > 0:
            items = torch.cat([items, items.new_full((batch, missing), -1)], dim=1)
            scores = torch.cat([scores, scores.new_full((batch, missing), float("-inf"))], dim=1)
    return BeamSearchResult(items=items, scores=scores)


def free_beam_search(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    trie: ItemTrie,
    beam_size: int,
    *,
    amp_dtype: torch.dtype | None = None,
) -> BeamSearchResult:
    """Beam search without the trie (``evaluate.trie: false``; the MTGRec paper's decoding): every
    step expands each beam by every vocabulary token (the level's only, under ``level_softmax``),
    the ``beam_size`` best L-token sequences are looked up in ``trie`` afterwards and those that
    name no item are dropped. The valid ones keep their order, first; the rest of the row is -1 /
    -inf (fewer than ``beam_size`` items where invalid sequences won beams)."""
    device, trie, input_ids, attention_mask = _on_model_device(model, input_ids, attention_mask, trie, beam_size)
    length = trie.id_length
    with eval_mode(model), torch.inference_mode(), _autocast(device, amp_dtype):
        decoder = _step_decoder(model, input_ids, attention_mask, length)
        batch = input_ids.shape[0]
        scores = torch.zeros(batch, 1, dtype=torch.float32, device=device)
        tokens = torch.full((batch, 1), PAD, dtype=torch.long, device=device)
        sequences = torch.zeros(batch, 1, 0, dtype=torch.long, device=device)  # [B, K, depth]
        for depth in range(length):
            logits = decoder.step(tokens).float()  # [B, K, V]
            restrict = getattr(model, "restrict_logits", None)
            if restrict is not None:
                logits = restrict(logits.unsqueeze(-2), first_step=depth).squeeze(-2)
            log_probs = torch.log_softmax(logits, dim=-1)
            vocab = log_probs.shape[-1]
            candidates = (scores.unsqueeze(-1) + log_probs).view(batch, -1)
            scores, flat = candidates.topk(min(beam_size, candidates.shape[1]), dim=1)
            parent, tokens = flat // vocab, flat % vocab
            rows = torch.arange(batch, device=device)[:, None]
            sequences = torch.cat([sequences[rows, parent], tokens.unsqueeze(-1)], dim=-1)
            if depth + 1 < length:
                decoder.reorder(parent)
        items = trie.lookup(sequences.reshape(-1, length)).view(batch, -1)
        order = torch.argsort((items < 0).to(torch.int8), dim=1, stable=True)  # valid first, in beam order
        items, scores = items.gather(1, order), scores.gather(1, order)
        scores = scores.masked_fill(items < 0, float("-inf"))
        missing = beam_size - items.shape[1]
        if missing > 0:
            items = torch.cat([items, items.new_full((batch, missing), -1)], dim=1)
            scores = torch.cat([scores, scores.new_full((batch, missing), float("-inf"))], dim=1)
    return BeamSearchResult(items=items, scores=scores)


def rank_items(
    model: nn.Module, batch: Mapping[str, torch.Tensor] | object, trie: ItemTrie, beam_size: int, *, amp_dtype: torch.dtype | None = None
) -> BeamSearchResult:
    """``constrained_beam_search`` on a collated batch: the trainer's ``Batch`` or a mapping, with ``input_ids`` and ``attention_mask``."""
    if isinstance(batch, Mapping):
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    else:
        input_ids, attention_mask = batch.input_ids, batch.attention_mask
    return constrained_beam_search(model, input_ids, attention_mask, trie, beam_size, amp_dtype=amp_dtype)
