"""``recommender.item_embedding``: a learned vector per item, added to a history item's input.

Why: on Amazon Beauty a first-order Markov chain beats every model here because 10% of the test
users' (last item -> target) pairs occur in the training data, and there it ranks the target in
its top 10 for 72% of them; the generative default over semantic IDs does so for 26%, SASRec-CE
(free item embeddings) for 56% (``reports/benchmarks/known_transition_hits.md``). An item's
input in the ``items`` encoding is the sum of its ID tokens' embeddings, shared with every item
that shares a token; this gives each item its own vector beside them, so the model can tell the
exact last item apart. It is a deviation from SPEC 4 (TIGER's input is the semantic-ID tokens
only), off by default.

The item is found from its token group (the row of ``set_items``' [N, L] table whose tokens equal
the group), so every path that embeds a history item (unpacked, packed, beam search) gets it
without carrying item ids. A group that is no item's (padding, the eos group, an item added after
training) gets row 0, which is zero and never trained (``padding_idx``). Rows start at zero, so a
fresh model scores exactly as it would without the option, and an item absent from training keeps
a zero vector (weight decay holds it there): it falls back to its semantic ID alone.
"""

from __future__ import annotations

import torch
from torch import nn

#: row of a token group that is no item's
UNKNOWN = 0


class ItemEmbedding(nn.Module):
    """[..., L] item token groups -> [..., d] per-item vectors (zero for a group that is no item's)."""

    def __init__(self, d_model: int, vocab_size: int):
        super().__init__()
        self.vocab_size = int(vocab_size)
        self.table = nn.Embedding(1, d_model, padding_idx=UNKNOWN)
        nn.init.zeros_(self.table.weight)
        self.register_buffer("keys", torch.zeros(0, dtype=torch.long), persistent=False)  # sorted group keys
        self.register_buffer("rows", torch.zeros(0, dtype=torch.long), persistent=False)  # their table rows (item id + 1)

    def group_keys(self, groups: torch.Tensor) -> torch.Tensor:
        """One int64 per token group: its tokens as the digits of a base-``vocab_size`` number."""
        length = groups.shape[-1]
        if self.vocab_size**length >= 2**62:
            raise ValueError(f"item embedding: {length} tokens over a vocabulary of {self.vocab_size} do not fit one int64 key")
        powers = self.vocab_size ** torch.arange(length - 1, -1, -1, device=groups.device, dtype=torch.long)
        return (groups.long() * powers).sum(dim=-1)

    def set_items(self, item_tokens: torch.Tensor) -> None:
        """Index the items' [N, L] token table (row = item id); the table grows to N + 1 rows when
        N exceeds what it has (new rows zero: a model being served meets items it never trained on)."""
        n_items = int(item_tokens.shape[0])
        weight = self.table.weight
        keys, order = torch.sort(self.group_keys(item_tokens.to(weight.device)))
        if n_items > 1 and bool((keys[1:] == keys[:-1]).any()):  # checked before anything changes
            raise ValueError("item embedding: two items share one semantic ID, so their token groups cannot tell them apart")
        if n_items + 1 > weight.shape[0]:
            grown = torch.zeros(n_items + 1, weight.shape[1], dtype=weight.dtype, device=weight.device)
            grown[: weight.shape[0]] = weight.detach()
            self.table.weight = nn.Parameter(grown)
        self.keys, self.rows = keys, order + 1

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        if self.keys.numel() == 0:
            raise RuntimeError("item embedding: no items indexed yet (set_items first)")
        keys = self.group_keys(groups)
        pos = torch.searchsorted(self.keys, keys).clamp_max(self.keys.numel() - 1)
        rows = torch.where(self.keys[pos] == keys, self.rows[pos], torch.full_like(pos, UNKNOWN))
        return self.table(rows)
