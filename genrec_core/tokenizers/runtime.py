"""The runtime item tokenizer: kept tokenizers live next to the recommender while it trains.

Why (issue 11, SPEC 3 and 8): BLOGER trains the tokenizer and the recommender together, so the
item IDs are no longer a fixed table read from ``data/ids/item_ids.parquet``; they are a function
of the RQ-VAE's current parameters, recomputed during training. ``RuntimeItemTokenizer`` holds
the kept tokenizers (RQ-VAEs as whole trainable ``RQVAE`` modules: encoder, codebooks, decoder)
and the item vectors, and gives

- ``hard_ids(name)``: the ID table [N, L'] (codes after collision handling, what emit-ids would
  write for the same weights) on the module's device;
- ``item_tokens(name)``: the same as vocabulary token ids (``vocab.codes_to_tokens``);
- ``soft_codes(name, items=..., vectors=..., temperature=...)``: code probabilities [n, L, K],
  ``softmax(-||r_l - e^l_k||^2 / T)`` per level, with autograd to the encoder and the codebooks
  (level l's residual uses the hard codes of the levels before, as the quantiser does);
- ``refresh()``: re-derives every table from the current parameters, resolves collisions with the
  configured mode, rebuilds the tries and says what changed (``RefreshReport``);
- ``trie(name)``: the ``ItemTrie`` of the current IDs, for constrained decoding;
- ``tokenizer_loss(name)``: the RQ-VAE's own loss (needs the decoder: kept files written before
  decoders were stored raise a clear error).

A tokenizer is trained here when its kind gives a ``trainable_module()`` (``base.
SemanticTokenizer``; the RQ-VAE does); the others (PQ, RQ-KMeans: no parameters to train) give
hard IDs only, and asking them for soft probabilities or a loss is an error. The vocabulary is sized from the codebook
(``SemanticIdVocab.from_codebook``, plus the dedup level), so any ID a later refresh produces
has a token. Nothing here knows about stages or the trainer; a method wires it (``Method.
update_item_tokens`` tells the trainer when the IDs changed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from genrec_core.errors import GenrecError
from genrec_core.recommender.trie import ItemTrie
from genrec_core.recommender.vocab import SemanticIdVocab
from genrec_core.tokenizers.base import QuantizeResult, SemanticTokenizer
from genrec_core.tokenizers.collisions import MODES, collision_stats, resolve_collisions
from genrec_core.tokenizers.rqvae import RQVAE

#: default bound of the dedup level's vocabulary (the largest colliding group a refresh may make)
DEFAULT_DEDUP_SIZE = 32


@dataclass
class TableChange:
    """How one tokenizer's table changed in a refresh (shares over items)."""

    changed: float  # share of items whose ID (any token) changed
    first_changed: float  # share of items whose first token changed
    items_moved: int  # reassign_last: items moved off their raw last code
    max_group_size: int  # largest group of items with the same raw L codes
    collision_rate: float


@dataclass
class RefreshReport:
    """What ``refresh`` did, per tokenizer name."""

    tables: dict[str, TableChange] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return any(t.changed > 0 for t in self.tables.values())

    def to_dict(self) -> dict:
        return {name: dict(t.__dict__) for name, t in self.tables.items()}


class RuntimeItemTokenizer(nn.Module):
    """Kept tokenizers + item vectors -> hard IDs, soft code probabilities, tries (see module doc).

    ``tokenizers``: {name: tokenizer} or [(name, tokenizer)] (``load_kept_tokenizers``' output),
    all with the same number of levels and codebook size; ``vectors`` [N, D]: the item vectors
    (row = item id) the tokenizers were trained on. ``collision``: ``reassign_last`` or
    ``dedup_level``; ``dedup_size``: the dedup level's vocabulary (``dedup_level`` only).
    ``default``: the tokenizer used when a call names none (default: the last, as single-ID
    training uses). ``temperature``: the softmax temperature when a call gives none.
    Move it with ``.to(device)`` / ``.double()`` like any module; the tables follow.
    """

    def __init__(
        self,
        tokenizers: Mapping[str, SemanticTokenizer] | Iterable[tuple[str, SemanticTokenizer]],
        vectors: np.ndarray | torch.Tensor,
        collision: str = "reassign_last",
        *,
        dedup_size: int | None = None,
        default: str | None = None,
        temperature: float = 1.0,
        residual_grad: str = "exact",
    ):
        super().__init__()
        items = list(tokenizers.items()) if isinstance(tokenizers, Mapping) else list(tokenizers)
        if not items:
            raise ValueError("no tokenizer given")
        if collision not in MODES:
            raise GenrecError(f"param ids.collision: must be reassign_last or dedup_level, got {collision!r}")
        levels = {int(t.levels) for _, t in items}
        sizes = {int(t.codebook_size) for _, t in items}
        if len(levels) != 1 or len(sizes) != 1:
            raise ValueError(f"all tokenizers need the same levels and codebook size, got levels {sorted(levels)}, sizes {sorted(sizes)}")
        self.levels, self.codebook_size = levels.pop(), sizes.pop()
        self.collision = collision
        self.temperature = float(temperature)
        self.residual_grad = residual_grad
        self.names = [name for name, _ in items]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"duplicate tokenizer names: {self.names}")
        self.default = default if default is not None else self.names[-1]
        if self.default not in self.names:
            raise ValueError(f"default tokenizer {self.default!r} is not one of {self.names}")
        if collision == "dedup_level":
            dedup_size = DEFAULT_DEDUP_SIZE if dedup_size is None else int(dedup_size)
        else:
            dedup_size = None
        self.vocab = SemanticIdVocab.from_codebook(self.levels, self.codebook_size, dedup_size)

        self.models = nn.ModuleDict()  # trainable modules (RQ-VAEs), by name
        self.fixed: dict[str, SemanticTokenizer] = {}  # PQ / RQ-KMeans: hard IDs only
        for name, tok in items:
            module = tok.trainable_module()
            if module is not None:
                self.models[name] = module
            else:
                self.fixed[name] = tok
        x = torch.as_tensor(np.asarray(vectors) if not isinstance(vectors, torch.Tensor) else vectors)
        if x.dim() != 2:
            raise ValueError(f"vectors must be [N, D], got shape {tuple(x.shape)}")
        self.register_buffer("vectors", x.to(torch.get_default_dtype()).contiguous(), persistent=False)
        self._codes: dict[str, np.ndarray] = {}  # raw codes [N, L]
        self._ids: dict[str, np.ndarray] = {}  # after collision handling [N, L']
        self._tries: dict[str, ItemTrie] = {}
        self.refresh()

    # ------------------------------------------------------------------ basics
    @property
    def num_items(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def device(self) -> torch.device:
        return self.vectors.device

    def is_trainable(self, name: str | None = None) -> bool:
        """True for an RQ-VAE (soft probabilities, gradients, refresh can change its IDs)."""
        return self._name(name) in self.models

    def model(self, name: str | None = None) -> RQVAE:
        name = self._name(name)
        if name not in self.models:
            kind = type(self.fixed[name]).__name__
            raise GenrecError(
                f"tokenizer {name!r} is a {kind}: soft code probabilities, gradients and a tokenizer loss need an RQ-VAE (only hard IDs are available)"
            )
        return self.models[name]

    def _name(self, name: str | None) -> str:
        name = self.default if name is None else name
        if name not in self.names:
            raise KeyError(f"unknown tokenizer {name!r}; have {self.names}")
        return name

    # ------------------------------------------------------------------ hard IDs
    def hard_ids(self, name: str | None = None) -> torch.Tensor:
        """The ID table [N, L'] (int64, after collision handling) on this module's device."""
        return torch.from_numpy(self._ids[self._name(name)]).to(self.device)

    def raw_codes(self, name: str | None = None) -> torch.Tensor:
        """Codes [N, L] before collision handling (argmin per level)."""
        return torch.from_numpy(self._codes[self._name(name)]).to(self.device)

    def item_tokens(self, name: str | None = None) -> torch.Tensor:
        """The ID table as vocabulary token ids [N, L'] (what the recommender reads and decodes)."""
        return torch.from_numpy(self.vocab.codes_to_tokens(self._ids[self._name(name)])).to(self.device)

    def all_item_tokens(self) -> torch.Tensor:
        """[T, N, L'] token ids of every tokenizer, in ``names`` order (a ``SequenceEncoder`` table)."""
        return torch.stack([self.item_tokens(n) for n in self.names])

    def trie(self, name: str | None = None) -> ItemTrie:
        """Prefix trie of the current IDs (as token ids), rebuilt by every ``refresh``."""
        name = self._name(name)
        if name not in self._tries:
            self._tries[name] = ItemTrie.build(self.vocab.codes_to_tokens(self._ids[name]), self.vocab.size)
        return self._tries[name]

    @torch.no_grad()
    def _quantize(self, name: str) -> QuantizeResult:
        if name in self.fixed:
            return self.fixed[name].quantize(self.vectors.detach().float().cpu().numpy())
        model = self.models[name]
        was_training = model.training
        model.eval()  # dropout off: IDs are a function of the parameters
        try:
            codes, last = model.quantizer.assign(model.encoder(self.vectors))
        finally:
            model.train(was_training)
        return QuantizeResult(
            codes=codes.cpu().numpy().astype(np.int64),
            last_residual=last.detach().cpu().numpy(),
            last_codebook=model.quantizer.codebooks[-1].detach().cpu().numpy().copy(),
        )

    def refresh(self, names: Iterable[str] | None = None) -> RefreshReport:
        """Re-derive the codes of ``names`` (default: all) from the current parameters, resolve
        collisions (``collision``), rebuild their tries; returns the change against the old IDs
        (all zeros on the first call). Raises when a dedup group outgrows the vocabulary."""
        report = RefreshReport()
        for name in self.names if names is None else [self._name(n) for n in names]:
            result = self._quantize(name)
            ids = resolve_collisions(result, self.collision, self.codebook_size)
            if ids.shape[1] != self.vocab.id_length:
                raise AssertionError(f"IDs of {ids.shape[1]} tokens, vocabulary of {self.vocab.id_length}")
            too_big = ids.max(axis=0) >= np.asarray(self.vocab.level_sizes)
            if too_big.any():
                level = int(np.flatnonzero(too_big)[0])
                raise GenrecError(
                    f"tokenizer {name}: level {level + 1} needs {int(ids[:, level].max()) + 1} tokens, the vocabulary has {self.vocab.level_sizes[level]}"
                    + ("; raise dedup_size" if self.collision == "dedup_level" else "")
                )
            stats = collision_stats(result.codes, ids)
            old = self._ids.get(name)
            if old is None:
                changed = first = 0.0
            else:
                changed = float(np.any(old != ids, axis=1).mean())
                first = float((old[:, 0] != ids[:, 0]).mean())
            report.tables[name] = TableChange(changed, first, stats.items_moved, stats.max_group_size, stats.collision_rate)
            self._codes[name] = np.asarray(result.codes, dtype=np.int64)
            self._ids[name] = ids
            self._tries.pop(name, None)
            self.trie(name)
        return report

    def ids_state(self, name: str | None = None) -> dict[str, torch.Tensor]:
        """The current raw codes and IDs of ``name`` (copies), for a training checkpoint: a resumed
        run restores them with ``load_ids_state`` instead of re-deriving them. Tensors, not numpy
        arrays: last.pt is read with ``weights_only=True``, which refuses numpy objects."""
        name = self._name(name)
        return {"codes": torch.from_numpy(self._codes[name].copy()), "ids": torch.from_numpy(self._ids[name].copy())}

    def load_ids_state(self, state: dict[str, torch.Tensor | np.ndarray], name: str | None = None) -> None:
        """Restore ``ids_state``'s tables for ``name`` (the trie is rebuilt from them)."""
        name = self._name(name)
        ids = np.asarray(state["ids"], dtype=np.int64).copy()
        if ids.shape != self._ids[name].shape:
            raise ValueError(f"tokenizer {name}: stored IDs of shape {ids.shape}, the current ones are {self._ids[name].shape}")
        self._codes[name] = np.asarray(state["codes"], dtype=np.int64).copy()
        self._ids[name] = ids
        self._tries.pop(name, None)

    # ------------------------------------------------------------------ soft codes
    def _inputs(self, items: torch.Tensor | np.ndarray | None, vectors: torch.Tensor | None) -> torch.Tensor:
        if (items is None) == (vectors is None):
            raise ValueError("give exactly one of items (item ids) or vectors")
        if vectors is not None:
            return vectors
        idx = torch.as_tensor(items, dtype=torch.long, device=self.device)
        return self.vectors[idx]

    def soft_assign(
        self, name: str | None = None, *, items=None, vectors: torch.Tensor | None = None, temperature: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities [n, L, K], raw hard codes [n, L]) of ``items`` (ids, any shape ->
        [..., L, K]) or ``vectors`` [n, D], with autograd to the RQ-VAE's encoder and codebooks.
        The hard codes are the argmax before collision handling; the ID a recommender reads is
        ``hard_ids`` (with ``reassign_last`` some last tokens differ from the argmax)."""
        model = self.model(name)
        x = self._inputs(items, vectors)
        shape = x.shape[:-1]
        t = self.temperature if temperature is None else float(temperature)
        probs, codes = model.quantizer.soft_assign(model.encoder(x.reshape(-1, x.shape[-1])), t, self.residual_grad)
        return probs.reshape(*shape, *probs.shape[1:]), codes.reshape(*shape, codes.shape[-1])

    def soft_codes(self, name: str | None = None, *, items=None, vectors: torch.Tensor | None = None, temperature: float | None = None) -> torch.Tensor:
        """Code probabilities [..., L, K] (see ``soft_assign``)."""
        return self.soft_assign(name, items=items, vectors=vectors, temperature=temperature)[0]

    # ------------------------------------------------------------------ the tokenizer's own loss
    def tokenizer_loss(self, name: str | None = None, *, items=None, vectors: torch.Tensor | None = None) -> torch.Tensor:
        """The RQ-VAE loss (reconstruction + codebook + beta x commitment, SPEC 3) on ``items``
        (default: every item). Needs the decoder: a tokenizer from an old kept file raises."""
        model = self.model(name)
        x = self.vectors if items is None and vectors is None else self._inputs(items, vectors)
        return model(x).loss
