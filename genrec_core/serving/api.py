"""``ServingModel``: a trained model plus its item catalogue, ranking histories given in the dataset's own ids.

(``Recommender``, its old name, stays an alias; ``recommender.interface.Recommender`` is the
protocol every model implements, a different thing.)

It is made of ``serving.loading.ServingParts``, loaded from a pipeline workspace
(``data/recommender/best.pt``, ``data/processed/``) or from an exported bundle (``genrec export``);
``ServingModel.load(path)`` tells them apart by the bundle's ``manifest.json`` (the loading itself
is ``serving.loading``'s; this module ranks). Any ``recommender.model`` (t5, decoder_only,
sasrec, gru4rec) and any training method: the model comes back through
``genrec_core.recommender.checkpoint`` (the one loader) and ranks through the evaluate stage's
routine (``interface.rank_examples`` over the model's ``rank``), with the evaluate stage's
encoders, so a history ranks as it does in the test split.

Ranking rules:
- histories are item ids of the raw files (``source_item_id`` of ``data/processed/items.parquet``),
  oldest first; only the last ``data.max_items`` items are used (the training window);
- generative models run trie-constrained beam search with ``max(k, evaluate.beam_size)`` beams and
  return the best k (the pipeline's test ranking uses ``evaluate.beam_size`` beams, so for
  ``k <= evaluate.beam_size`` the lists are the test stage's); scores are the beams' summed token
  log-probabilities. SASRec / GRU4Rec return the top k of all items' dot-product scores. As in
  the evaluate stage, items of the history are not removed;
- an unknown item id is an error naming it (``unknown="error"``) or is dropped with a warning and
  reported in ``skipped`` (``unknown="skip"``);
- an empty history (also one emptied by skipping) gets the fallback: the items most often seen in
  training (``train_count``, ties by item index), ``fallback = "most_popular"``, score = that count;
- ``k`` must be 1 .. the number of items.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl
import torch

from genrec_core.errors import GenrecError
from genrec_core.recommender.checkpoint import LoadedRecommender
from genrec_core.recommender.data import ExampleArrays, SequenceEncoder
from genrec_core.recommender.interface import rank_examples
from genrec_core.recommender.model_spec import model_names
from genrec_core.sequential.training import ItemIdEncoder
from genrec_core.serving.catalog import Catalog, extend_catalogue
from genrec_core.serving.errors import RequestError
from genrec_core.serving.loading import ServingParts, bundle_parts, load_parts, workspace_parts
from genrec_core.serving.meta import ModelMeta
from genrec_core.serving.new_items import (
    AddedItems,
    UnassignableItem,
    assign_new_ids,
    build_text_encoder,
    check_encoder_spec,
    check_new_items,
    embed_texts,
    quote_id,
    render_new_texts,
)

__all__ = ["FALLBACK_POPULAR", "Catalog", "Prepared", "Recommendation", "RecommendedItem", "Recommender", "ServingModel", "View"]

log = logging.getLogger(__name__)

FALLBACK_POPULAR = "most_popular"
UNKNOWN_POLICIES = ("error", "skip")
#: Longest list of unknown ids quoted in an error message.
_QUOTED = 10


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class RecommendedItem:
    rank: int  # 1-based
    item_id: str  # the dataset's own id (source_item_id)
    title: str | None
    score: float
    index: int  # internal item index (row of the items table)


@dataclass(frozen=True)
class Recommendation:
    items: list[RecommendedItem]
    fallback: str | None = None  # "most_popular" when the history was empty
    skipped: list[str] = field(default_factory=list)  # unknown ids dropped (unknown="skip")

    def to_dict(self) -> dict[str, Any]:
        return {"items": [dataclasses.asdict(i) for i in self.items], "fallback": self.fallback, "skipped": list(self.skipped)}


@dataclass(frozen=True)
class Prepared:
    """A checked request: the history as internal indices (already cut to the training window)."""

    history: list[int]
    k: int
    user: int = 0
    skipped: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- recommender


class View(NamedTuple):
    """What one ranking reads: the model's item table, the catalogue and the batch encoder.

    ``add_items`` builds a new view beside the live one and swaps it in with one assignment under
    the ranking lock, so a ranking never sees the model of one catalogue and the rows of another."""

    loaded: LoadedRecommender
    catalog: Catalog
    collate: Any
    frame: pl.DataFrame | None  # the catalogue as a table (items.parquet of a bundle)


class ServingModel:
    """A trained model ready to rank histories of source item ids (see the module docstring)."""

    def __init__(
        self,
        loaded: LoadedRecommender,
        catalog: Catalog,
        *,
        max_len: int,
        beam_size: int,
        batch_size: int,
        params: dict[str, Any],
        users: dict[str, int] | None = None,
        source: str = "",
        meta: ModelMeta | None = None,
        frame: pl.DataFrame | None = None,
    ):
        self.max_len = int(max_len)
        self.beam_size = int(beam_size)
        self.batch_size = int(batch_size)
        self.params = params  # the params the model came from (params.yaml as dict)
        self.users = users  # source user id -> user index (models with user tokens only)
        self.source = source
        self.meta = meta if meta is not None else ModelMeta()
        self._lock = threading.Lock()
        self._view = View(loaded, catalog, self._make_collate(loaded), frame)
        n = self.num_items
        if len(catalog) != n:
            raise ValueError(f"the items table has {len(catalog)} items but the model ranks {n}")

    @classmethod
    def from_parts(cls, parts: ServingParts) -> ServingModel:
        """The ranking object of what ``serving.loading`` loaded."""
        return cls(
            parts.loaded,
            Catalog.from_frame(parts.frame),
            max_len=parts.max_len,
            beam_size=parts.beam_size,
            batch_size=parts.batch_size,
            params=parts.params,
            users=parts.users,
            source=parts.source,
            meta=parts.meta,
            frame=parts.frame,
        )

    # -- loading (``serving.loading`` does it; these name it where a user looks first)

    @classmethod
    def load(cls, path: str | Path = ".", device: str = "cpu", params_file: str | Path | None = None) -> ServingModel:
        """A bundle folder (has ``manifest.json``) or a workspace root."""
        return cls.from_parts(load_parts(path, device, params_file))

    @classmethod
    def from_workspace(cls, root: str | Path = ".", device: str = "cpu", params_file: str | Path | None = None) -> ServingModel:
        """From the pipeline's outputs under ``root``; params from ``params_file`` (default
        ``root/params.yaml``; the defaults when there is none)."""
        return cls.from_parts(workspace_parts(root, device, params_file))

    @classmethod
    def from_bundle(cls, path: str | Path, device: str = "cpu", verify: bool = True) -> ServingModel:
        """From a bundle folder, checked (format, version, file names, every sha256)."""
        return cls.from_parts(bundle_parts(path, device, verify))

    # -- properties

    @property
    def loaded(self) -> LoadedRecommender:
        """The model of the live view."""
        return self._view.loaded

    @property
    def catalog(self) -> Catalog:
        return self._view.catalog

    def snapshot(self) -> View:
        """The live view, consistent in itself (a writer saves from one, never from two reads)."""
        return self._view

    @property
    def kind(self) -> str:
        return self.loaded.kind

    @property
    def num_items(self) -> int:
        if self.loaded.item_tokens is not None:
            return int(self.loaded.item_tokens.shape[0])
        return int(self.loaded.model.num_items)

    @property
    def needs_user(self) -> bool:
        return bool(self.loaded.params.user_tokens)

    @staticmethod
    def _make_collate(loaded: LoadedRecommender):
        if loaded.item_tokens is not None:
            p = loaded.params
            return SequenceEncoder.for_recommender(loaded.item_tokens, p, loaded.vocab).collate
        return ItemIdEncoder(int(loaded.model.num_items)).collate

    # -- checking requests

    def check_k(self, k: Any) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise RequestError("k", f"must be an integer, got {k!r}")
        if k <= 0:
            raise RequestError("k", f"must be >= 1, got {k}")
        if k > self.num_items:
            raise RequestError("k", f"must be at most the number of items in the catalogue ({self.num_items}), got {k}")
        return int(k)

    def prepare(self, history: Sequence[str | int] | None, k: Any = 10, user: str | int | None = None, unknown: str = "error") -> Prepared:
        """Check one request (raises ``RequestError`` naming the field) and map it to indices."""
        if unknown not in UNKNOWN_POLICIES:
            raise RequestError("unknown", f"must be one of {', '.join(UNKNOWN_POLICIES)}, got {unknown!r}")
        k = self.check_k(k)
        if history is None:
            history = []
        if isinstance(history, (str, bytes)) or not isinstance(history, Sequence):
            raise RequestError("history", f"must be a list of item ids, got {type(history).__name__}")
        ids: list[str] = []
        for pos, item in enumerate(history):
            if isinstance(item, bool) or not isinstance(item, (str, int, np.integer)):
                raise RequestError(f"history[{pos}]", f"an item id must be a string or an integer, got {quote_id(repr(item))}")
            text = str(item).strip()
            if not text.isprintable():  # control characters, lone surrogates: never an id, and unprintable in an answer
                raise RequestError(f"history[{pos}]", f"item id {quote_id(text)} holds unprintable characters")
            ids.append(text)
        index = self.catalog.index
        missing = [i for i in ids if i not in index]
        if missing and unknown == "error":
            quoted = ", ".join(quote_id(m) for m in missing[:_QUOTED]) + (f" and {len(missing) - _QUOTED} more" if len(missing) > _QUOTED else "")
            raise RequestError(
                "history",
                f"unknown item id(s) {quoted}: not among the model's {len(index)} items (skip them with unknown='skip' / --skip-unknown / "
                '"skip_unknown": true)',
            )
        if missing:
            log.warning("skipping %d unknown item id(s): %s", len(missing), ", ".join(quote_id(m) for m in missing[:_QUOTED]))
        known = [index[i] for i in ids if i in index][-self.max_len :]
        return Prepared(known, k, self._user_index(user, bool(known)), missing)

    def _user_index(self, user: str | int | None, ranked: bool) -> int:
        if not self.needs_user or not ranked:
            return 0
        if user is None:
            raise RequestError("user_id", f"this model prepends a user token (recommender.user_tokens = {self.loaded.params.user_tokens}); give the user's id")
        assert self.users is not None
        if str(user) not in self.users:
            raise RequestError("user_id", f"unknown user id {str(user)!r}")
        return int(self.users[str(user)])

    # -- ranking

    def recommend(
        self,
        histories: Sequence[Sequence[str | int]],
        k: int = 10,
        users: Sequence[str | int | None] | None = None,
        unknown: str = "error",
        progress: bool = False,
    ) -> list[Recommendation]:
        """One ``Recommendation`` per history (best first); raises ``RequestError`` on bad input."""
        if users is not None and len(users) != len(histories):
            raise RequestError("users", f"{len(users)} users for {len(histories)} histories")
        prepared = []
        for row, history in enumerate(histories):
            try:
                prepared.append(self.prepare(history, k, None if users is None else users[row], unknown))
            except RequestError as exc:
                if len(histories) == 1:
                    raise
                field = f"histories[{row}]{exc.field[len('history') :]}" if exc.field.startswith("history") else exc.field
                raise RequestError(field, exc.message, exc.status) from None
        return self.rank_prepared(prepared, progress=progress)

    def recommend_one(self, history: Sequence[str | int], k: int = 10, user: str | int | None = None, unknown: str = "error") -> Recommendation:
        return self.rank_prepared([self.prepare(history, k, user, unknown)])[0]

    def rank_prepared(self, prepared: Sequence[Prepared], progress: bool = False) -> list[Recommendation]:
        """Rank checked requests together (one model call per batch of ``evaluate.batch_size``)."""
        out: list[Recommendation | None] = [None] * len(prepared)
        groups: dict[int, list[int]] = {}
        for row, p in enumerate(prepared):
            if p.history:
                groups.setdefault(max(p.k, self.beam_size), []).append(row)
            else:
                out[row] = self._popular(p)
        for width, rows in groups.items():
            items, scores, view = self._rank([prepared[r] for r in rows], width, progress)
            for j, row in enumerate(rows):
                p = prepared[row]
                keep = items[j] >= 0
                got = [
                    self._item(view.catalog, rank, int(i), float(s)) for rank, (i, s) in enumerate(zip(items[j][keep][: p.k], scores[j][keep][: p.k]), start=1)
                ]
                out[row] = Recommendation(got, None, list(p.skipped))
        return out  # type: ignore[return-value]

    def _rank(self, prepared: Sequence[Prepared], width: int, progress: bool) -> tuple[np.ndarray, np.ndarray, View]:
        """Item indices and scores, and the view they index (histories' indices stay valid in a
        later view: adding items only appends)."""
        lengths = np.array([len(p.history) for p in prepared], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        history = np.array([i for p in prepared for i in p.history], dtype=np.int32)
        examples = ExampleArrays(np.array([p.user for p in prepared], dtype=np.int32), offsets, history, np.zeros(len(prepared), dtype=np.int32))
        with self._lock, torch.inference_mode():
            view = self._view
            items, scores = rank_examples(view.loaded.model, examples, view.collate, width, self.batch_size, progress=progress)
        return items, scores, view

    # -- new items (cold start)

    def add_items(self, items: Any, device: str = "cpu") -> AddedItems:
        """Make new items recommendable (generative models only; see ``serving.new_items``).

        ``items``: a list of ``{"item_id": ..., "text": "..."}`` or ``{"item_id": ..., <text
        fields of the dataset>}`` (rendered with the embed stage's template), or a mapping
        ``{item_id: text}``. Their text is embedded with the model's encoder, the trained tokenizer
        gives them IDs (collisions resolved with the trained ``ids.collision`` against the existing
        table, whose IDs do not change), the trie is extended; afterwards they are ranked and may
        appear in histories like any item. Raises ``RequestError`` naming the bad field (nothing is
        changed then) and ``GenrecError`` when this model cannot add items. Returns ``AddedItems``.

        All or nothing: everything that can fail (checking, embedding, IDs, the catalogue rows)
        builds a new ``View`` beside the live one; only then, under the ranking lock, the model's
        trie is extended and the view swapped in (one assignment).
        """
        view = self._view
        if view.loaded.item_tokens is None:
            raise GenrecError(
                f"a {self.kind} model scores a fixed table of item ids learnt in training: it cannot rank an unseen item; adding items needs a "
                f"generative model ({', '.join(model_names('generative'))})"
            )
        spec = self.meta.encoder
        check_encoder_spec(spec, self.source)
        tok_path = self.meta.tokenizer_path
        if tok_path is None or not Path(tok_path).is_file():
            raise GenrecError(
                f"{self.source}: the tokenizer that made the IDs ({self.loaded.tokenizer}) is not there ({tok_path}); export the model from a workspace "
                "that keeps it"
            )
        new = check_new_items(items, view.catalog.index, spec["text_fields"])
        texts = render_new_texts(new, spec)
        if self.meta.text_encoder is None:
            self.meta.text_encoder = build_text_encoder(spec, device)
        vectors = embed_texts(self.meta.text_encoder, texts, bool(spec.get("normalize", True)))
        if self.meta.tokenizer is None:
            from genrec_core.tokenizers.training import load_tokenizer  # the tokenizers' code, only when items are added

            self.meta.tokenizer = load_tokenizer(tok_path)
        try:
            result = self.meta.tokenizer.quantize(vectors)
        except ValueError as exc:  # the encoder does not make vectors of the tokenizer's input size
            raise GenrecError(f"{self.source}: the encoder's vectors do not fit the tokenizer ({exc})") from None
        vocab = view.loaded.vocab
        mode = (self.params.get("ids") or {}).get("collision", "reassign_last")
        existing = vocab.tokens_to_codes(view.loaded.item_tokens.cpu().numpy())
        try:
            codes, moved = assign_new_ids(result.codes, result.last_residual, result.last_codebook, existing, mode, vocab.level_sizes)
        except UnassignableItem as exc:
            raise RequestError(f"items[{exc.row}]", f"item {new[exc.row].source_id!r} cannot be given an ID: {exc.reason}") from None
        tokens = torch.as_tensor(vocab.codes_to_tokens(codes), dtype=view.loaded.item_tokens.dtype)
        start = len(view.catalog)
        table = torch.cat([view.loaded.item_tokens.cpu(), tokens]).to(view.loaded.item_tokens.device)
        frame = extend_catalogue(view.frame, view.catalog, new, start)
        catalog = Catalog.from_frame(frame)
        if len(catalog) != table.shape[0] or catalog.source_ids[start:] != [it.source_id for it in new]:
            raise GenrecError(f"internal error: {len(catalog)} catalogue rows for {table.shape[0]} item IDs")  # never half a catalogue
        loaded = view.loaded._replace(item_tokens=table)
        new_view = View(loaded, catalog, self._make_collate(loaded), frame)
        added = AddedItems([it.source_id for it in new], list(range(start, start + len(new))), codes, np.asarray(result.codes), [bool(m) for m in moved], texts)
        with self._lock:
            if self._view is not view:
                raise GenrecError("the catalogue changed while these items were prepared; add them again")
            try:
                view.loaded.model.set_items(table)  # the trie of old + new IDs (a duplicate ID fails here)
            except Exception:
                view.loaded.model.set_items(view.loaded.item_tokens)  # the old trie back: nothing changed
                raise
            self._view = new_view
            self.meta.added.append(added)
        log.info("added %d items (%d moved off a taken ID)", len(new), int(np.sum(moved)))
        return added

    @staticmethod
    def _item(catalog: Catalog, rank: int, index: int, score: float) -> RecommendedItem:
        return RecommendedItem(rank, catalog.source_ids[index], catalog.titles[index], score, index)

    def _popular(self, p: Prepared) -> Recommendation:
        catalog = self.catalog
        top = catalog.popular[: p.k]
        return Recommendation(
            [self._item(catalog, r, int(i), float(catalog.train_count[i])) for r, i in enumerate(top, start=1)], FALLBACK_POPULAR, list(p.skipped)
        )


#: The old name (before ``recommender.interface.Recommender``, the models' protocol, shared it).
Recommender = ServingModel
