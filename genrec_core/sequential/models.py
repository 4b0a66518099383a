"""SASRec and GRU4Rec over item-ID embeddings, scoring every item by a dot product.

Common interface (what the data, loss and ranking code rely on):

- inputs: ``input_ids`` [B, H] = item id + 1, right-padded with 0 (oldest item first);
  ``attention_mask`` [B, H] (1 = item, 0 = pad); every row holds at least one item;
- ``sequence_output(input_ids, attention_mask)`` -> [B, H, D]: the state after each position,
  depending only on that position and earlier ones (causal);
- ``user_vectors(...)`` -> [B, D]: the state at each row's last item;
- ``forward(input_ids, attention_mask, labels=None)`` -> [B, N] scores of all N items
  (``user_vectors @ item_embeddings.T``; the input and output item embeddings are shared, as in
  SASRec and RecBole's GRU4Rec). ``labels`` is accepted and ignored so the generic ``Trainer``
  can call every model alike.
- ``loss(batch)`` -> [B] softmax cross-entropy of each target over all items; ``rank(batch, k)``
  -> the top k of all item scores: the interface every recommender shares
  (``genrec_core.recommender.interface``).
- ``config``: the keyword arguments that rebuild the model (stored in ``best.pt``).

Positions (SASRec): learned, counted back from the most recent item, as the original's
left-padding to ``max_len`` does: the last item always has position ``max_len - 1``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genrec_core.recommender.model_spec import MODEL_SPECS, FamilyNames, canonical_model_name


def _init_weights(module: nn.Module, std: float = 0.02) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class ItemScorer(nn.Module):
    """Shared parts: item embeddings (row 0 = pad), last-position gathering, all-item scores."""

    num_items: int
    item_embedding: nn.Embedding

    def sequence_output(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def user_vectors(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.sequence_output(input_ids, attention_mask)
        last = attention_mask.long().sum(dim=1).clamp_min(1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def item_vectors(self) -> torch.Tensor:
        """[N, D] output embeddings of items 0..N-1."""
        return self.item_embedding.weight[1:]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: Any = None) -> torch.Tensor:
        return self.user_vectors(input_ids, attention_mask) @ self.item_vectors().t()

    def loss(self, batch: Any) -> torch.Tensor:
        """[B] softmax cross-entropy of each example's target over all N items."""
        return F.cross_entropy(self(batch.input_ids, batch.attention_mask).float(), batch.targets, reduction="none")

    def rank(self, batch: Any, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(items [B, min(k, N)], scores) = the top of every item's score (history items included)."""
        device = self.item_embedding.weight.device
        scores = self(batch.input_ids.to(device), batch.attention_mask.to(device)).float()
        top = torch.topk(scores, min(int(k), self.num_items), dim=1)
        return top.indices, top.values


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, num_heads: int, dropout: float):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        b, s, d = query.shape
        h = self.num_heads
        q = F.linear(query, self.qkv.weight[:d], self.qkv.bias[:d])
        k, v = F.linear(keys, self.qkv.weight[d:], self.qkv.bias[d:]).split(d, dim=-1)
        q, k, v = (t.view(b, s, h, d // h).transpose(1, 2) for t in (q, k, v))
        # right-padded rows: a real position only sees itself and earlier (real) items
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.out(att.transpose(1, 2).reshape(b, s, d))


class SASRecBlock(nn.Module):
    """The original SASRec block: Q = LN(x); x = Q + MHA(Q, x, x); x = LN(x); x = x + FFN(x)."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, num_heads, dropout)
        self.ffn_norm = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model), nn.Dropout(dropout))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = self.attn_norm(x)
        x = q + self.drop(self.attn(q, x))
        x = self.ffn_norm(x)
        x = x + self.ffn(x)
        return x * mask


class SASRec(ItemScorer):
    """Self-attentive sequential recommendation (Kang & McAuley, 2018)."""

    kind = "sasrec"

    @classmethod
    def from_params(cls, num_items: int, max_len: int, rp: Any) -> SASRec:
        return cls(num_items, max_len, d_model=rp.d_model, num_layers=rp.num_layers, num_heads=rp.num_heads, d_ff=rp.d_ff, dropout=rp.dropout)

    def __init__(self, num_items: int, max_len: int, d_model: int = 64, num_layers: int = 2, num_heads: int = 1, d_ff: int = 256, dropout: float = 0.2):
        super().__init__()
        self.config = dict(num_items=num_items, max_len=max_len, d_model=d_model, num_layers=num_layers, num_heads=num_heads, d_ff=d_ff, dropout=dropout)
        self.num_items, self.max_len = int(num_items), int(max_len)
        self.item_embedding = nn.Embedding(num_items + 1, d_model, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, d_model)
        self.emb_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(SASRecBlock(d_model, num_heads, d_ff, dropout) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(d_model)
        self.apply(_init_weights)

    def positions(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, H] position ids: the last item gets max_len - 1, the one before max_len - 2, ..."""
        lengths = attention_mask.long().sum(dim=1, keepdim=True)
        if int(lengths.max()) > self.max_len:
            raise ValueError(f"a history has {int(lengths.max())} items; this SASRec was built for at most {self.max_len}")
        j = torch.arange(attention_mask.shape[1], device=attention_mask.device).unsqueeze(0)
        return (self.max_len - lengths + j).clamp(0, self.max_len - 1)

    def sequence_output(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(self.item_embedding.weight.dtype)
        x = self.item_embedding(input_ids) + self.position_embedding(self.positions(attention_mask))
        x = self.emb_dropout(x) * mask
        for block in self.blocks:
            x = block(x, mask)
        return self.final_norm(x)


class GRU4Rec(ItemScorer):
    """Session-based recommendation with a GRU (Hidasi et al., 2016), RecBole's variant:
    embedding -> dropout -> GRU -> linear back to the embedding size -> dot with item embeddings."""

    kind = "gru4rec"

    @classmethod
    def from_params(cls, num_items: int, max_len: int, rp: Any) -> GRU4Rec:
        return cls(num_items, max_len, d_model=rp.d_model, num_layers=rp.num_layers, dropout=rp.dropout)

    def __init__(self, num_items: int, max_len: int, d_model: int = 64, num_layers: int = 1, hidden_size: int | None = None, dropout: float = 0.2):
        super().__init__()
        hidden_size = int(hidden_size or d_model)
        self.config = dict(num_items=num_items, max_len=max_len, d_model=d_model, num_layers=num_layers, hidden_size=hidden_size, dropout=dropout)
        self.num_items, self.max_len = int(num_items), int(max_len)
        self.item_embedding = nn.Embedding(num_items + 1, d_model, padding_idx=0)
        self.emb_dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(d_model, hidden_size, num_layers=num_layers, batch_first=True, bias=False)
        self.dense = nn.Linear(hidden_size, d_model)
        self.apply(_init_weights)
        for weight in self.gru.parameters():
            nn.init.xavier_uniform_(weight)

    def sequence_output(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.emb_dropout(self.item_embedding(input_ids))
        out, _ = self.gru(x)  # right-padded: positions before a row's end never see its padding
        return self.dense(out)


#: The item-ID models' names, read from the registry (genrec_core/recommender/model_spec.py) at each use.
MODEL_KINDS = FamilyNames("item_id")


def _item_model_class(kind: str) -> type[ItemScorer]:
    spec = MODEL_SPECS.get(canonical_model_name(kind))
    if spec is None or spec.family != "item_id":
        raise ValueError(f"unknown sequential model {kind!r}; choose one of {', '.join(MODEL_KINDS)}")
    return spec.model_class()


def build_model(kind: str, num_items: int, max_len: int, rp: Any) -> nn.Module:
    """A model from ``recommender`` params: d_model, num_layers, num_heads, d_ff, dropout."""
    if rp.dropout == "auto":
        raise ValueError("recommender.dropout auto: resolve it from the schedule first (genrec_core.recommender.schedule.resolve_dropout)")
    return _item_model_class(kind).from_params(num_items, max_len, rp)


def model_from_config(kind: str, config: dict[str, Any]) -> nn.Module:
    """The model ``kind`` rebuilt from its ``config`` (the keyword arguments ``best.pt`` stores)."""
    return _item_model_class(kind)(**config)
