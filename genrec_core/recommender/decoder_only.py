"""``recommender.model: decoder_only``: a LLaMA-style decoder-only transformer over semantic IDs.

Built from a ``LlamaConfig`` (no pretrained weights, no hub access). One causal sequence holds

    [user token] history (either ``encoder_input``) eos | PAD y_1 .. y_L   -> predicts y_1 .. y_L, eos

The prefix is exactly the T5 encoder's input (``SequenceEncoder``, right-padded, ending with eos,
``items``: one position per history item, the sum of its tokens' embeddings); the target segment
is T5's decoder input (PAD as the start token, then the target's tokens), appended after the
padded prefix. Padding inside the sequence is masked out of attention and skipped by the position
ids (RoPE positions 0..n-1 over the n real prefix positions, then n, n+1, ... for the target), so
a user's scores do not depend on how much padding the batch adds. Logits come from the target
segment only, so the losses, ``restrict_logits``/``level_softmax`` and beam search see the same
[B, L + 1, V] as for the T5 model; training is one teacher-forced forward pass.

The interface is ``GenerativeRecommender``'s: ``encode`` (here: the prefix's input embeddings; a
decoder-only model has no separate encoder pass), ``decode`` (prefix and decoder inputs in one
causal pass), ``forward`` (teacher forcing), ``restrict_logits``, ``config`` (``vocab_size``), plus
``beam_decoder``: beam search runs the prefix once per user, keeps its key/value cache and then
feeds one token per beam and step (``CachedPrefixDecoder``, the counterpart of
``beam_search.CachedT5Decoder``); ``loss``/``rank``/``set_items`` come from ``SemanticIdRanking``.

Hyperparameters (the recommender section's): ``num_layers + num_decoder_layers`` decoder layers
(the T5 model's depth; with no cross attention that is slightly fewer parameters), ``d_model``,
``num_heads`` heads of size ``d_kv`` (must be even: RoPE rotates pairs), ``d_ff`` = the SwiGLU
MLP's inner size, ``dropout`` = dropout on the input embeddings and on the attention weights
(LLaMA has no residual dropout). RMSNorm, rotary positions (no length limit), tied input/output
embeddings as in the T5 model (without T5's ``d_model**-0.5`` output scaling).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from genrec_core.config import RecommenderParams
from genrec_core.recommender.item_embedding import ItemEmbedding
from genrec_core.recommender.model import GenerativeRecommender, SemanticIdRanking, level_token_mask, pool_item_embeddings
from genrec_core.recommender.packing import Packing, packed_attention
from genrec_core.recommender.vocab import EOS, PAD, SemanticIdVocab

#: RoPE: positions are not limited by a table; this only bounds what the config advertises.
MAX_POSITIONS = 4096


def build_llama_config(params: RecommenderParams, vocab: SemanticIdVocab) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab.size + params.user_tokens,
        hidden_size=params.d_model,
        intermediate_size=params.d_ff,
        num_hidden_layers=params.num_layers + params.num_decoder_layers,
        num_attention_heads=params.num_heads,
        num_key_value_heads=params.num_heads,
        head_dim=params.d_kv,
        attention_dropout=params.dropout,
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-6,
        # no pad_token_id: LLaMA would zero and freeze that embedding, and PAD is the start token
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=EOS,
        tie_word_embeddings=True,
        use_cache=False,
    )


def _cache_kwarg() -> str:
    """LlamaModel.forward's name for the key/value cache (``cache`` in recent transformers 5,
    ``past_key_values`` before)."""
    from transformers import LlamaModel

    return "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


def shift_right(labels: torch.Tensor) -> torch.Tensor:
    """Decoder inputs [B, T] for labels [B, T]: the start token PAD, then the labels but the last."""
    return torch.cat([torch.full_like(labels[:, :1], PAD), labels[:, :-1]], dim=1)


def prefix_positions(attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(position ids [B, S] of the prefix, its real length [B]): real positions count 0, 1, ...;
    padding repeats its left neighbour's id (it is masked anyway)."""
    mask = attention_mask.long()
    return (mask.cumsum(dim=1) - 1).clamp_min(0), mask.sum(dim=1)


class DecoderOnlyRecommender(SemanticIdRanking, nn.Module):
    """LLaMA over semantic-ID tokens; returns next-token logits for teacher-forced targets."""

    def __init__(self, params: RecommenderParams, vocab: SemanticIdVocab):
        super().__init__()
        if params.d_kv % 2:
            raise ValueError(f"decoder_only uses rotary positions: d_kv must be even, got {params.d_kv}")
        self.vocab = vocab
        self.encoder_input = params.encoder_input
        self.user_tokens = int(params.user_tokens)
        self.level_softmax = bool(params.level_softmax)
        self.llama = LlamaForCausalLM(build_llama_config(params, vocab))
        self.embed_dropout = nn.Dropout(params.dropout)
        # recommender.item_embedding: a vector per item beside its ID tokens (sized by set_items)
        if params.item_embedding not in (True, False):
            raise ValueError(f"recommender.item_embedding {params.item_embedding!r}: resolve auto first (genrec_core.training.resolve_item_embedding)")
        self.item_embedding = ItemEmbedding(params.d_model, self.llama.config.vocab_size) if params.item_embedding else None
        self.register_buffer("level_mask", level_token_mask(vocab), persistent=False)
        self._cache_kwarg = _cache_kwarg()

    # the same level masking as the T5 model (MASKED_LOGIT outside the step's level block)
    restrict_logits = GenerativeRecommender.restrict_logits

    @property
    def config(self) -> LlamaConfig:
        return self.llama.config

    @property
    def token_embedding(self) -> torch.Tensor:
        """The token embedding table [V, d] (tied with the output layer): soft token
        distributions are embedded as ``probs @ token_embedding``."""
        return self.llama.get_input_embeddings().weight

    def set_items(self, item_tokens: torch.Tensor) -> None:
        """``SemanticIdRanking.set_items``; also indexes the items for ``recommender.item_embedding``."""
        super().set_items(item_tokens)
        if self.item_embedding is not None:
            self.item_embedding.set_items(item_tokens)

    def input_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, S] token ids or [B, S, L] per-item token groups -> [B, S, d] (a group: the sum of
        its tokens' embeddings, plus the item's own vector with ``recommender.item_embedding``)."""
        emb = self.llama.get_input_embeddings()(input_ids)
        if input_ids.dim() != 3:
            return emb
        emb = emb.sum(dim=-2)
        return emb if self.item_embedding is None else emb + self.item_embedding(input_ids)

    def run(self, embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, cache: DynamicCache | None = None) -> torch.Tensor:
        """Final hidden states [B, T, d] of ``embeds`` [B, T, d] (after the ``cache``'s positions, if any)."""
        kwargs = {self._cache_kwarg: cache} if cache is not None else {}
        out = self.llama.model(
            inputs_embeds=self.embed_dropout(embeds),
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=cache is not None,
            **kwargs,
        )
        return out.last_hidden_state

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """The prefix's input embeddings [B, S, d]: ``decode`` runs them with the decoder inputs.
        ``inputs_embeds`` ([B, S, d], or [B, S, L, d] per-item groups, summed) replaces the
        embeddings of ``input_ids`` (soft inputs, as ``GenerativeRecommender.encode``)."""
        return self.input_embeddings(input_ids) if inputs_embeds is None else pool_item_embeddings(inputs_embeds)

    def decode(
        self, prefix: torch.Tensor, attention_mask: torch.Tensor, decoder_input_ids: torch.Tensor, decoder_inputs_embeds: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits [B, T, V] for decoder inputs [B, T] (start token PAD, then target tokens), or
        their embeddings ``decoder_inputs_embeds`` [B, T, d], placed after the prefix embeddings
        [B, S, d] (``encode``), in one causal pass."""
        batch, src_len, _ = prefix.shape
        steps = decoder_input_ids.shape[1]
        positions, lengths = prefix_positions(attention_mask)
        target_positions = lengths[:, None] + torch.arange(steps, device=lengths.device)
        target = self.input_embeddings(decoder_input_ids) if decoder_inputs_embeds is None else decoder_inputs_embeds
        embeds = torch.cat([prefix, target], dim=1)
        mask = torch.cat([attention_mask, attention_mask.new_ones(batch, steps)], dim=1)
        hidden = self.run(embeds, mask, torch.cat([positions, target_positions], dim=1))
        return self.restrict_logits(self.llama.lm_head(hidden[:, src_len:]))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        packing: Packing | None = None,
    ) -> torch.Tensor:
        """Teacher-forced logits [B, T, V] for ``labels`` [B, T] (the target's tokens, then eos);
        the optional soft inputs as in ``GenerativeRecommender.forward``. ``packing``: the packed
        batch's ``packed_forward`` (``input_ids`` and ``attention_mask`` ignored; ``inputs_embeds``
        then holds the chunk items' [G, C, L, d]), reached through ``forward`` so that a DDP
        wrapper sees the pass and all-reduces its gradients."""
        if packing is not None:
            return self.packed_forward(packing, labels, inputs_embeds, decoder_inputs_embeds)
        return self.decode(self.encode(input_ids, attention_mask, inputs_embeds), attention_mask, shift_right(labels), decoder_inputs_embeds)

    def packed_forward(
        self, packing: Packing, labels: torch.Tensor, items_embeds: torch.Tensor | None = None, decoder_inputs_embeds: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Teacher-forced logits [E, L + 1, V] of ``labels`` [E, L + 1] for examples that share
        their history items (``recommender.pack_examples``, ``packing.py``): each example's segment
        is the items-input eos group, then ``shift_right(labels)``, after its window of the chunk.

        Soft inputs (BLOGER), as the unpacked path takes them: ``items_embeds`` [G, C, L, d]
        replaces the chunk items' token embeddings (summed per item like ``encode``'s per-item
        groups), ``decoder_inputs_embeds`` [E, L + 1, d] those of ``shift_right(labels)``; the eos
        group stays hard."""
        if self.encoder_input != "items" or self.user_tokens:
            raise ValueError("packed training needs encoder_input items and no user tokens")
        if items_embeds is not None and items_embeds.shape[:-1] != packing.items.shape:
            raise ValueError(f"packed items_embeds of shape {tuple(items_embeds.shape)}: expected the chunk items' {tuple(packing.items.shape)} + (d,)")
        steps = labels.shape[1]
        segment = steps + 1  # the eos group, then the decoder inputs
        mask, positions, rows = packed_attention(packing, segment)
        chunks = self.input_embeddings(packing.items) if items_embeds is None else pool_item_embeddings(items_embeds)  # [G, C, d]
        eos_group = torch.full((1, packing.items.shape[-1]), PAD, dtype=torch.long, device=labels.device)
        eos_group[0, 0] = EOS
        decoder_inputs = self.input_embeddings(shift_right(labels)) if decoder_inputs_embeds is None else decoder_inputs_embeds
        segments = torch.cat([self.input_embeddings(eos_group[None]).expand(labels.shape[0], 1, -1), decoder_inputs], dim=1)
        g, c, d = chunks.shape
        embeds = torch.cat([chunks, chunks.new_zeros(g, mask.shape[-1] - c, d)], dim=1)
        embeds = embeds.index_put((packing.group[:, None], rows), segments)
        hidden = self.run(embeds, mask, positions)
        return self.restrict_logits(self.llama.lm_head(hidden[packing.group[:, None], rows[:, 1:]]))

    def beam_decoder(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_steps: int) -> CachedPrefixDecoder:
        """What ``beam_search.constrained_beam_search`` steps: the prefix run once, then one token per beam."""
        return CachedPrefixDecoder(self, input_ids, attention_mask, max_steps)


class CachedPrefixDecoder:
    """One-token-at-a-time decoding of K beams per user after a shared prefix (key/value cache).

    Same contract as ``beam_search.CachedT5Decoder``: ``step(tokens [B, K])`` feeds the next
    decoder input of every beam (the first is the start token PAD) and returns the raw logits
    [B, K, V] of the token after it; ``reorder(parent [B, K'])`` makes beam j of user b continue
    beam ``parent[b, j]``. The cache holds B x K rows (B after the prefix); reordering selects rows.
    """

    def __init__(self, model: DecoderOnlyRecommender, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_steps: int):
        self.model = model
        self.batch = input_ids.shape[0]
        self.max_steps = int(max_steps)
        self.prefix_mask = attention_mask
        positions, self.lengths = prefix_positions(attention_mask)
        self.cache = DynamicCache()
        model.run(model.input_embeddings(input_ids), attention_mask, positions, self.cache)
        self.beams = 1  # cache rows per user
        self.steps = 0

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.steps >= self.max_steps:
            raise RuntimeError(f"decoder stepped past its {self.max_steps} positions")
        batch, beams = tokens.shape
        if beams != self.beams:
            raise ValueError(f"{beams} beams per user given, the cache holds {self.beams} (call reorder first)")
        rows = batch * beams
        embeds = self.model.input_embeddings(tokens.reshape(rows, 1))
        mask = self.prefix_mask.repeat_interleave(beams, dim=0)
        mask = torch.cat([mask, mask.new_ones(rows, self.steps + 1)], dim=1)
        positions = (self.lengths + self.steps).repeat_interleave(beams)[:, None]
        hidden = self.model.run(embeds, mask, positions, self.cache)
        self.steps += 1
        return self.model.llama.lm_head(hidden[:, -1]).view(batch, beams, -1)

    def reorder(self, parent: torch.Tensor) -> None:
        rows = torch.arange(self.batch, device=parent.device)[:, None] * self.beams + parent
        self.cache.reorder_cache(rows.reshape(-1))
        self.beams = int(parent.shape[1])
