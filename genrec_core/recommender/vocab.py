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
