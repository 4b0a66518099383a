"""A T5 encoder-decoder built from a config (no pretrained weights) over the semantic-ID vocabulary.

Two encoder inputs (``recommender.encoder_input``):
- ``tokens`` (SPEC 4): the history's IDs flattened, then eos; ``input_ids`` is [B, S].
- ``items``: one encoder position per history item whose embedding is the sum of its tokens'
  embeddings, then eos; ``input_ids`` is [B, S, L] (pad 0). About 4x cheaper per step on a CPU
  for a 20-item history, at the cost of a deviation from the paper's input format.

The decoder always generates the target's L tokens, then eos. ``encode`` and ``decode`` are split
so that beam search can run the encoder once per user.

``loss(batch)`` and ``rank(batch, k)`` are the interface every recommender shares
(``interface.py``); ``SemanticIdRanking`` implements them for both generative backbones: ``rank``
is beam search constrained to the trie of the item IDs given to ``set_items``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration

from genrec_core.config import RecommenderParams
from genrec_core.recommender.data import Batch
from genrec_core.recommender.interface import amp_dtype_for, model_device
from genrec_core.recommender.trie import ItemTrie
from genrec_core.recommender.vocab import EOS, MASKED_LOGIT, PAD, SemanticIdVocab


def level_token_mask(vocab: SemanticIdVocab) -> torch.Tensor:
    """[L + 1, V] bool: the tokens allowed at each decoding step (level l's block, then eos)."""
    length_l = vocab.id_length
    mask = torch.zeros(length_l + 1, vocab.size, dtype=torch.bool)
    for level, (offset, size) in enumerate(zip(vocab.level_offsets.tolist(), vocab.level_sizes)):
        mask[level, offset : offset + size] = True
    mask[length_l, EOS] = True
    return mask


def build_t5_config(params: RecommenderParams, vocab: SemanticIdVocab) -> T5Config:
    # transformers 5 needs the special token ids passed explicitly.
    return T5Config(
        vocab_size=vocab.size + params.user_tokens,
        d_model=params.d_model,
        d_kv=params.d_kv,
        d_ff=params.d_ff,
        num_layers=params.num_layers,
        num_decoder_layers=params.num_decoder_layers,
        num_heads=params.num_heads,
        dropout_rate=params.dropout,
        feed_forward_proj="relu",
        decoder_start_token_id=PAD,
        pad_token_id=PAD,
        eos_token_id=EOS,
        tie_word_embeddings=True,
        use_cache=False,
    )


def pool_item_embeddings(embeds: torch.Tensor) -> torch.Tensor:
    """[B, S, d] stays; [B, S, L, d] per-item token groups (``encoder_input: items``) -> their
    sum [B, S, d], the same reduction as the hard path's ``input_embeddings``."""
    return embeds.sum(dim=-2) if embeds.dim() == 4 else embeds


class SemanticIdRanking:
    """``loss``/``rank`` of a generative model (``forward`` = teacher-forced logits [B, L + 1, V];
    ``encode``/``decode`` or ``beam_decoder`` for beam search; ``config.vocab_size``)."""

    item_trie: ItemTrie | None = None
    #: ``rank`` decodes within the trie (default) or freely, dropping invalid IDs (``evaluate.trie``)
    decode_with_trie: bool = True

    def set_items(self, item_tokens: torch.Tensor) -> None:
        """The valid item IDs ([N, L] token ids, row = item id) that ``rank`` decodes to; call again
        after the IDs change (a tokenizer update)."""
        self.item_trie = ItemTrie.build(item_tokens, self.config.vocab_size)

    def loss(self, batch: Batch, inputs_embeds: torch.Tensor | None = None, decoder_inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """[B] token-mean cross-entropy of each target's tokens and eos (teacher forcing); the
        optional soft inputs are ``forward``'s (labels stay hard)."""
        from genrec_core.recommender.losses import per_example_nll, token_nll

        soft = {k: v for k, v in (("inputs_embeds", inputs_embeds), ("decoder_inputs_embeds", decoder_inputs_embeds)) if v is not None}
        logits = self(batch.input_ids, batch.attention_mask, batch.labels, **soft)
        ones = torch.ones(batch.labels.shape[0], batch.labels.shape[1] - 1, device=batch.labels.device)
        return per_example_nll(token_nll(logits, batch.labels), batch.labels, ones)

    def rank(self, batch: Batch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(items [B, k], scores [B, k]) of trie-constrained beam search with k beams (bf16 on CUDA);
        with ``decode_with_trie`` false, free beam search with the invalid IDs dropped."""
        from genrec_core.recommender.beam_search import constrained_beam_search, free_beam_search

        if self.item_trie is None:
            raise RuntimeError("rank needs the item IDs: call set_items(item_tokens) first")
        device = model_device(self)
        if self.item_trie.device != device:
            self.item_trie = self.item_trie.to(device)  # once, not per batch
        search = constrained_beam_search if self.decode_with_trie else free_beam_search
        result = search(self, batch.input_ids.to(device), batch.attention_mask.to(device), self.item_trie, k, amp_dtype=amp_dtype_for(device))
        return result.items, result.scores


class GenerativeRecommender(SemanticIdRanking, nn.Module):
    """T5 over semantic-ID tokens; returns next-token logits for teacher-forced targets."""

    def __init__(self, params: RecommenderParams, vocab: SemanticIdVocab):
        super().__init__()
        self.vocab = vocab
        self.encoder_input = params.encoder_input
        self.user_tokens = int(params.user_tokens)
        self.level_softmax = bool(params.level_softmax)
        self.t5 = T5ForConditionalGeneration(build_t5_config(params, vocab))
        # [L + 1, V] allowed tokens per decoding step (a buffer: follows .to(device), not saved)
        self.register_buffer("level_mask", level_token_mask(vocab), persistent=False)

    def restrict_logits(self, logits: torch.Tensor, first_step: int = 0) -> torch.Tensor:
        """Logits [..., T, V] of decoding steps first_step.. with every token outside the step's
        level set to ``MASKED_LOGIT`` (a no-op unless ``level_softmax``): the softmax of step l
        then runs over level l's K codes only, in training and in beam search alike."""
        if not self.level_softmax:
            return logits
        steps = logits.shape[-2]
        allowed = self.level_mask[first_step : first_step + steps]  # [T, V']
        allowed = torch.nn.functional.pad(allowed, (0, logits.shape[-1] - allowed.shape[-1]))  # user tokens: never allowed
        return logits.masked_fill(~allowed, MASKED_LOGIT)

    @property
    def config(self) -> T5Config:
        return self.t5.config

    @property
    def token_embedding(self) -> torch.Tensor:
        """The shared token embedding table [V, d] (input and tied output embedding): soft
        token distributions are embedded as ``probs @ token_embedding``."""
        return self.t5.shared.weight

    def input_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, S] token ids or [B, S, L] per-item token groups -> [B, S, d]."""
        emb = self.t5.shared(input_ids)
        return emb.sum(dim=-2) if input_ids.dim() == 3 else emb

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder states [B, S, d]. ``inputs_embeds`` replaces the token embeddings of
        ``input_ids``: [B, S, d] (``tokens``) or [B, S, L, d] per-item token groups (``items``:
        summed over the group, as ``input_embeddings`` sums the hard tokens)."""
        embeds = self.input_embeddings(input_ids) if inputs_embeds is None else pool_item_embeddings(inputs_embeds)
        out = self.t5.encoder(inputs_embeds=embeds, attention_mask=attention_mask)
        return out.last_hidden_state

    def decode(
        self, encoder_hidden: torch.Tensor, attention_mask: torch.Tensor, decoder_input_ids: torch.Tensor, decoder_inputs_embeds: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits [B, T, V] for decoder inputs [B, T] (start token PAD, then target tokens), or
        for their embeddings ``decoder_inputs_embeds`` [B, T, d] when given (soft inputs)."""
        inputs = {"decoder_input_ids": decoder_input_ids} if decoder_inputs_embeds is None else {"decoder_inputs_embeds": decoder_inputs_embeds}
        out = self.t5(
            encoder_outputs=(encoder_hidden,),
            attention_mask=attention_mask,
            use_cache=False,
            **inputs,
        )
        return self.restrict_logits(out.logits)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced logits [B, T, V] for ``labels`` [B, T] (the target's tokens, then eos).

        Soft inputs (BLOGER, SPEC 8): ``inputs_embeds`` replaces the history's token embeddings
        (see ``encode``), ``decoder_inputs_embeds`` [B, T, d] those of the teacher-forced decoder
        inputs (the start token, then the target's tokens; build them with
        ``soft_inputs.decoder_inputs_embeds``); ``labels`` stay hard. With one-hot distributions
        the logits equal the hard-id path's exactly."""
        decoder_input_ids = self.t5._shift_right(labels)
        return self.decode(self.encode(input_ids, attention_mask, inputs_embeds), attention_mask, decoder_input_ids, decoder_inputs_embeds)


def check_dropout_resolved(params: Any) -> None:
    """A model is built with a number: ``dropout: auto`` is resolved from the schedule first."""
    if params.dropout == "auto":
        raise ValueError("recommender.dropout auto: resolve it from the schedule first (genrec_core.recommender.schedule.resolve_dropout)")


def build_generative_model(params: RecommenderParams, vocab: SemanticIdVocab, item_tokens: torch.Tensor | None = None) -> nn.Module:
    """The generative backbone ``recommender.model`` names (its ``ModelSpec``: ``t5``, this T5,
    or ``decoder_only``), built from (params, vocab); with ``item_tokens`` [N, L] its ``rank``
    decodes to those items."""
    from genrec_core.recommender.model_spec import model_names, model_spec

    spec = model_spec(params.model)
    if not spec.generative:
        raise ValueError(f"{params.model!r} is not a generative model; choose one of {', '.join(model_names('generative'))}")
    check_dropout_resolved(params)
    model = spec.model_class()(params, vocab)
    if item_tokens is not None:
        model.set_items(item_tokens)
    return model
