"""SPEC section 4 vocabulary: pad = 0, eos = 1, then one block of tokens per ID level.

A code's token id depends on its level (code c at level l -> offset_l + c), so the decoder never
confuses the first and the second token of an ID. One vocabulary serves every tokenizer of a
multi-tokenizer table (MTGRec), sized by the largest code seen at each level.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

PAD = 0
EOS = 1
FIRST_CODE_TOKEN = 2
#: Logit given to tokens outside the decoding step's level under ``recommender.level_softmax``
#: (finite, so logit differences such as CFT's stay defined; its exp() is exactly 0).
MASKED_LOGIT = -1e9


@dataclass(frozen=True)
class SemanticIdVocab:
    level_sizes: tuple[int, ...]  # number of distinct codes per level

    @classmethod
    def from_codes(cls, tables: Iterable[np.ndarray]) -> SemanticIdVocab:
        """Size each level by the largest code any table uses there (all tables: same ID length)."""
        sizes: list[int] | None = None
        for codes in tables:
            level_max = (np.asarray(codes).max(axis=0) + 1).tolist()
            if sizes is None:
                sizes = level_max
            elif len(sizes) != len(level_max):
                raise ValueError(f"ID tables of different lengths: {len(sizes)} vs {len(level_max)}")
            else:
                sizes = [max(a, b) for a, b in zip(sizes, level_max)]
        if sizes is None:
            raise ValueError("no ID table given")
        return cls(tuple(int(s) for s in sizes))

    @classmethod
    def from_codebook(cls, levels: int, codebook_size: int, dedup_size: int | None = None) -> SemanticIdVocab:
        """Every level sized by the codebook (K codes each), plus a level of ``dedup_size``
        tokens when collisions are resolved with ``dedup_level``.

        Why beside ``from_codes``: a runtime tokenizer (BLOGER, SPEC 8) changes the IDs during
        training, so the vocabulary (hence the embedding table and the output layer) must hold
        every code the tokenizer could ever emit, not just the ones used at the start; the
        softmax over a level's codes is then over all K of them. The train stage keeps sizing
        from observed codes (``from_codes``): on ml-100k's defaults (3 x 64, every code used) the
        two agree, but tiny tables (the tests', the committed reference runs') do not use every
        code, and resizing their vocabulary would change every recorded weight.
        ``dedup_size`` bounds the appended level: a refresh that makes a larger colliding group
        than this is an error (the vocabulary cannot grow while training).
        """
        if levels < 1 or codebook_size < 1:
            raise ValueError(f"need levels >= 1 and codebook_size >= 1, got {levels}, {codebook_size}")
        if dedup_size is not None and dedup_size < 1:
            raise ValueError(f"dedup_size must be >= 1, got {dedup_size}")
        sizes = (int(codebook_size),) * int(levels) + ((int(dedup_size),) if dedup_size is not None else ())
        return cls(sizes)

    @property
    def id_length(self) -> int:
        return len(self.level_sizes)

    @property
    def level_offsets(self) -> np.ndarray:
        return FIRST_CODE_TOKEN + np.concatenate([[0], np.cumsum(self.level_sizes)[:-1]]).astype(np.int64)

    @property
    def size(self) -> int:
        return FIRST_CODE_TOKEN + int(sum(self.level_sizes))

    def codes_to_tokens(self, codes: np.ndarray) -> np.ndarray:
        """[N, L] codes -> [N, L] token ids."""
        codes = np.asarray(codes, dtype=np.int64)
        if codes.shape[-1] != self.id_length:
            raise ValueError(f"codes have {codes.shape[-1]} levels, vocabulary {self.id_length}")
        return codes + self.level_offsets

    def tokens_to_codes(self, tokens: np.ndarray) -> np.ndarray:
        return np.asarray(tokens, dtype=np.int64) - self.level_offsets

    def to_dict(self) -> dict:
        return {"level_sizes": list(self.level_sizes)}

    @classmethod
    def from_dict(cls, d: dict) -> SemanticIdVocab:
        return cls(tuple(d["level_sizes"]))
