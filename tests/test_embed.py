"""Embed stage: templates, both encoders, PCA, and the written artifact (SPEC section 2).

Model runs use the bundled MiniLM on a handful of short texts, or tiny random models built from
a config into tmp_path, so the file runs offline in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub from tests
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import polars as pl
import pytest

from genrec_core.config import EmbedParams, Params
from genrec_core.embed import build_encoder, fit_pca, render_texts, resolve_model
from genrec_core.embed.text import template_fields
from genrec_core.errors import ParamError

ML_TEMPLATE = "Title: {title}. Year: {year}. Genres: {genres}."
INFO = {"dataset": "ml-100k", "default_template": ML_TEMPLATE, "text_fields": ["title", "year", "genres"]}

TEXTS = [
    "Title: Toy Story (1995). Year: 1995. Genres: Animation|Children's|Comedy.",
    "Heat",
    "Title: GoldenEye (1995). Year: 1995. Genres: Action|Adventure|Thriller. A long description "
    "that makes this text much longer than the others so that the batch needs padding.",
    "",
    "Four Rooms (1995) Thriller",
    "Get Shorty",
    "Copycat (1995). Crime|Drama|Thriller",
]


def _items() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "item_id": pl.Series([0, 1, 2, 3], dtype=pl.Int32),
            "source_item_id": ["1", "2", "3", "4"],
            "title": ["Toy Story (1995)", "GoldenEye (1995)", "", None],
            "year": ["1995", None, "1996", "1997"],
            "genres": ["Animation|Comedy", "Action", "Drama", ""],
        }
    )


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --------------------------------------------------------------------------- templates


def test_full_rows_render_exactly_like_str_format():
    df = pl.DataFrame({"item_id": [0, 1], "title": ["A (1990)", "B"], "year": ["1990", "2001"], "genres": ["X|Y", "Z"]})
    for template in [ML_TEMPLATE, "{title}. {genres}", "{title} ({year}) [{genres}]", "{{{title}}}: {genres}", "{genres}{title}"]:
        expected = [template.format(**row) for row in df.drop("item_id").to_dicts()]
        assert render_texts(df, template) == expected, template


def test_auto_uses_dataset_default_and_empty_fields_leave_no_dangling_labels():
    texts = render_texts(_items(), "auto", INFO)
    assert texts == [
        "Title: Toy Story (1995). Year: 1995. Genres: Animation|Comedy.",
        "Title: GoldenEye (1995). Genres: Action.",
        "Year: 1996. Genres: Drama.",
        "Year: 1997.",
    ]
    assert render_texts(_items(), "{title} ({year})") == ["Toy Story (1995) (1995)", "GoldenEye (1995)", "(1996)", "(1997)"]
    all_empty = pl.DataFrame({"item_id": [0], "title": [None], "genres": [" "]}, schema={"item_id": pl.Int32, "title": pl.String, "genres": pl.String})
    assert render_texts(all_empty, "Title: {title}. Genres: {genres}.") == [""]


def test_non_string_fields_are_cast():
    df = pl.DataFrame({"item_id": [0, 1], "title": ["A", "B"], "year": [1995, None]})
    assert render_texts(df, "{title} {year}") == ["A 1995", "B"]


def test_unknown_placeholder_names_param_and_lists_fields():
    with pytest.raises(ParamError) as err:
        render_texts(_items(), "{title}. {brand}", INFO)
    assert err.value.param == "embed.template"
    msg = str(err.value)
    assert "{brand}" in msg and "source_item_id, title, year, genres" in msg


@pytest.mark.parametrize("template", ["{title", "{title}. {}", "{0}", "{title!r}", "{year:>6}", "no fields here"])
def test_malformed_templates_are_param_errors(template):
    with pytest.raises(ParamError) as err:
        render_texts(_items(), template, INFO)
    assert err.value.param == "embed.template"


def test_auto_without_default_template_is_param_error():
    with pytest.raises(ParamError, match="default_template"):
        render_texts(_items(), "auto", {"dataset": "x"})
    assert template_fields(ML_TEMPLATE) == ["title", "year", "genres"]


# --------------------------------------------------------------------------- encoders on MiniLM


@pytest.fixture(scope="module")
def minilm_st():
    return build_encoder(EmbedParams(mode="sentence_transformers", batch_size=4), "cpu")


def test_mean_pool_reproduces_sentence_transformers_on_minilm(minilm_st):
    mp = build_encoder(EmbedParams(mode="mean_pool", batch_size=3), "cpu")
    a = minilm_st.encode(TEXTS)
    b = mp.encode(TEXTS)
    assert a.shape == b.shape == (len(TEXTS), 384) and a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(_unit(a), _unit(b), atol=1e-5)
    # the texts really differ (guards against a degenerate all-equal output passing)
    assert np.abs(_unit(b)[0] - _unit(b)[1]).max() > 1e-2


def test_mean_pool_batching_and_length_sorting_do_not_change_vectors():
    one = build_encoder(EmbedParams(mode="mean_pool", batch_size=1), "cpu").encode(TEXTS)
    four = build_encoder(EmbedParams(mode="mean_pool", batch_size=4), "cpu").encode(TEXTS)
    np.testing.assert_allclose(one, four, atol=1e-5)
    # input order is kept: encoding a reversed list gives the reversed rows
    rev = build_encoder(EmbedParams(mode="mean_pool", batch_size=4), "cpu").encode(TEXTS[::-1])
    np.testing.assert_allclose(rev[::-1], four, atol=1e-5)


def test_sentence_transformers_max_length_truncates(minilm_st):
    short = build_encoder(EmbedParams(mode="sentence_transformers", max_length=8), "cpu")
    long_text = [TEXTS[2]]
    assert np.abs(short.encode(long_text) - minilm_st.encode(long_text)).max() > 1e-3


@pytest.mark.parametrize("mode", ["sentence_transformers", "mean_pool"])
@pytest.mark.parametrize("model", ["./no/such/model_dir", "no-such-org/no-such-model-xyz"])
def test_bad_model_is_one_clear_param_error(mode, model):
    with pytest.raises(ParamError) as err:
        build_encoder(EmbedParams(mode=mode, model=model), "cpu")
    assert err.value.param == "embed.model"
    assert model in str(err.value)


def test_model_dir_without_config_is_param_error(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ParamError, match="embed.model"):
        build_encoder(EmbedParams(mode="mean_pool", model=str(tmp_path)), "cpu")
    with pytest.raises(ParamError, match="is a file"):
        resolve_model(str(tmp_path / "weights.bin"))


# --------------------------------------------------------------------------- tiny models from configs


def _wordlevel_tokenizer(words: list[str], with_pad: bool):
    """A whitespace word-level tokenizer built offline; no pad token unless asked (like LLaMA)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"] + (["<pad>"] if with_pad else [])
    vocab = {w: i for i, w in enumerate(specials + sorted(set(words)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    kwargs = {"pad_token": "<pad>"} if with_pad else {}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", model_input_names=["input_ids", "attention_mask"], **kwargs
    )
    return fast, len(vocab)


WORDS = "the a movie of love war and space comedy drama story toy heat night long very title".split()
SHORT = "toy story"
LONGER = ["the very long movie of love and war and space and comedy and drama", "a night of heat and space and war"]


def _tiny_decoder(path: Path, kind: str) -> Path:
    """A random 2-layer LLaMA (rotary positions) or GPT-2 (absolute positions) saved to ``path``."""
    import torch
    from transformers import GPT2Config, GPT2Model, LlamaConfig, LlamaModel

    tok, vocab_size = _wordlevel_tokenizer(WORDS, with_pad=False)
    assert tok.pad_token is None
    tok.save_pretrained(path)
    torch.manual_seed(0)
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=None)
    if kind == "llama":
        cfg = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            **ids,
        )
        LlamaModel(cfg).save_pretrained(path)
    else:
        cfg = GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=64, **ids)
        GPT2Model(cfg).save_pretrained(path)
    return path


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_mean_pool_decoder_pads_with_eos_and_is_batch_invariant(tmp_path, kind):
    path = _tiny_decoder(tmp_path, kind)
    enc = build_encoder(EmbedParams(mode="mean_pool", model=str(path), batch_size=8), "cpu")
    assert enc.tokenizer.pad_token == "</s>"
    assert enc.dim == 32
    alone = enc.encode([SHORT])
    batched = enc.encode([SHORT, *LONGER])  # SHORT is padded to the longest text's length
    assert batched.shape == (3, 32) and np.isfinite(batched).all()
    np.testing.assert_allclose(batched[0], alone[0], atol=1e-5)
    assert np.abs(batched[0] - batched[1]).max() > 1e-3
    if kind == "gpt2":
        # absolute positions: left padding would move the short text's tokens; shows the test can fail
        enc.tokenizer.padding_side = "left"
        shifted = enc.encode([SHORT, *LONGER])
        assert np.abs(shifted[0] - alone[0]).max() > 1e-4


def test_mean_pool_t5_uses_encoder_only(tmp_path):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    tok, vocab_size = _wordlevel_tokenizer(WORDS, with_pad=True)
    tok.save_pretrained(tmp_path)
    torch.manual_seed(0)
    cfg = T5Config(
        vocab_size=vocab_size,
        d_model=16,
        d_kv=4,
        d_ff=32,
        num_layers=1,
        num_heads=4,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id,
    )
    T5ForConditionalGeneration(cfg).save_pretrained(tmp_path)
    enc = build_encoder(EmbedParams(mode="mean_pool", model=str(tmp_path), batch_size=8), "cpu")
    assert type(enc.model).__name__ == "T5EncoderModel"
    assert enc.dim == 16
    alone = enc.encode([SHORT])
    batched = enc.encode([SHORT, *LONGER])
    np.testing.assert_allclose(batched[0], alone[0], atol=1e-5)


# --------------------------------------------------------------------------- PCA


def _data(n=400, d=12, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.linspace(5.0, 0.2, d)
    mix = np.linalg.qr(rng.normal(size=(d, d)))[0]
    return (rng.normal(size=(n, d)) * scales) @ mix + rng.normal(size=d) * 3


def test_pca_whitened_output_has_identity_covariance():
    x = _data()
    z = fit_pca(x, 5, whiten=True).transform(x)
    assert z.shape == (400, 5) and z.dtype == np.float32
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(5), atol=1e-5)


def test_pca_matches_eigh_projection_up_to_sign():
    x = _data(seed=1)
    pca = fit_pca(x, 4, whiten=False)
    z = pca.transform(x)
    xc = x - x.mean(axis=0)
    evals, evecs = np.linalg.eigh(np.cov(xc, rowvar=False))
    top = evecs[:, ::-1][:, :4]
    ref = xc @ top
    for j in range(4):
        sign = np.sign(ref[:, j] @ z[:, j])
        np.testing.assert_allclose(z[:, j], sign * ref[:, j], atol=1e-4)
    np.testing.assert_allclose(pca.explained_variance, evals[::-1][:4], rtol=1e-8)
    assert 0 < pca.explained_variance_ratio.sum() < 1


def test_pca_sign_convention_is_deterministic():
    x = _data(seed=2)
    a = fit_pca(x, 3, whiten=False)
    b = fit_pca(x[np.random.default_rng(0).permutation(len(x))], 3, whiten=False)
    np.testing.assert_allclose(a.components, b.components, atol=1e-10)
    idx = np.argmax(np.abs(a.components), axis=1)
    assert (a.components[np.arange(3), idx] > 0).all()


def test_pca_dim_too_large_names_param():
    with pytest.raises(ParamError) as err:
        fit_pca(_data(n=8, d=5), 6)
    assert err.value.param == "embed.pca_dim"
    with pytest.raises(ParamError, match="embed.pca_dim"):
        fit_pca(_data(n=4, d=12), 5)


def test_pca_whitening_leaves_zero_variance_components_at_zero():
    x = _data(n=5, d=12)  # centred rank is 4, the 5th component has no variance
    z = fit_pca(x, 5, whiten=True).transform(x)
    assert np.isfinite(z).all()
    np.testing.assert_allclose(z[:, 4], 0, atol=1e-6)
    np.testing.assert_allclose(np.cov(z[:, :4], rowvar=False), np.eye(4), atol=1e-6)


# --------------------------------------------------------------------------- the stage


def _write_inputs(root: Path, items: pl.DataFrame, info: dict = INFO) -> None:
    processed = root / "data" / "processed"
    processed.mkdir(parents=True)
    items.write_parquet(processed / "items.parquet")
    (processed / "dataset.json").write_text(json.dumps(info))


def _stage_items() -> pl.DataFrame:
    titles = ["Toy Story", "GoldenEye", "Four Rooms", "Get Shorty", "Copycat", "Heat", "Casino", "Sabrina"]
    genres = ["Animation|Comedy", "Action|Thriller", "Thriller", "Comedy|Crime", "Crime|Drama", "Action|Crime", "Drama", None]
    df = pl.DataFrame(
        {
            "item_id": pl.Series(range(8), dtype=pl.Int32),
            "source_item_id": [str(i + 1) for i in range(8)],
            "title": titles,
            "year": ["1995"] * 7 + [""],
            "genres": genres,
        }
    )
    return df.reverse()  # the stage must restore item_id order


def test_stage_writes_vectors_in_item_order(tmp_path, minilm_st):
    from stages import embed as stage

    items = _stage_items()
    _write_inputs(tmp_path, items)
    params = Params(embed=EmbedParams(device="cpu", batch_size=3))
    stage.run(params, tmp_path)

    out = pl.read_parquet(tmp_path / "data" / "embeddings" / "item_vectors.parquet")
    assert out.schema == pl.Schema({"item_id": pl.Int32, "vector": pl.Array(pl.Float32, 384)})
    assert out["item_id"].to_list() == list(range(8))
    vectors = out["vector"].to_numpy()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    # row i is item i's text
    texts = render_texts(items.sort("item_id"), "auto", INFO)
    assert texts[7] == "Title: Sabrina."
    np.testing.assert_allclose(vectors, _unit(minilm_st.encode(texts)), atol=1e-5)

    report = json.loads((tmp_path / "reports" / "embed.json").read_text())
    assert report["dim"] == 384 and report["n_items"] == 8 and report["device"] == "cpu"
    assert report["mode"] == "sentence_transformers" and report["model"] == "default"
    assert report["seconds"] > 0 and report["pca"] is None
    assert not list((tmp_path / "data" / "embeddings").glob(".*tmp"))  # no temporary left behind


def test_stage_pca_is_deterministic(tmp_path):
    from stages import embed as stage

    params = Params(embed=EmbedParams(device="cpu", mode="mean_pool", pca_dim=4, pca_whiten=True))
    runs = []
    for name in ("a", "b"):
        root = tmp_path / name
        _write_inputs(root, _stage_items())
        stage.run(params, root)
        runs.append(pl.read_parquet(root / "data" / "embeddings" / "item_vectors.parquet"))
    assert runs[0].schema["vector"] == pl.Array(pl.Float32, 4)
    assert runs[0].equals(runs[1])
    z = runs[0]["vector"].to_numpy().astype(np.float64)
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(4), atol=1e-4)
    report = json.loads((tmp_path / "a" / "reports" / "embed.json").read_text())
    assert report["dim"] == 4 and report["model_dim"] == 384 and report["pca"]["whiten"] is True


def test_stage_rejects_pca_dim_above_item_count_before_loading_a_model(tmp_path):
    from stages import embed as stage

    _write_inputs(tmp_path, _stage_items())
    params = Params(embed=EmbedParams(device="cpu", model="./missing/model", pca_dim=9))
    with pytest.raises(ParamError) as err:
        stage.run(params, tmp_path)
    assert err.value.param == "embed.pca_dim"


def test_stage_rejects_gappy_item_ids(tmp_path):
    from genrec_core.errors import InputFormatError
    from stages import embed as stage

    _write_inputs(tmp_path, _stage_items().with_columns(pl.col("item_id") * 2))
    with pytest.raises(InputFormatError, match="0..N-1"):
        stage.run(Params(embed=EmbedParams(device="cpu")), tmp_path)


def test_copied_model_dir_works(tmp_path):
    """A local directory (not the package path) is accepted as embed.model."""
    src = Path(resolve_model("default"))
    dst = tmp_path / "minilm"
    shutil.copytree(src, dst)
    enc = build_encoder(EmbedParams(mode="mean_pool", model=str(dst)), "cpu")
    assert enc.model_name == str(dst.resolve())
    assert enc.encode(["heat"]).shape == (1, 384)


# --------------------------------------------------------------------------- streamed (chunked) encoding and writing


class _RecordingEncoder:
    """Deterministic fake encoder: vector of a text = (len, number of vowels, 1, item index parsed from the text)."""

    model_name = "fake"
    device = "cpu"
    dim = 4

    def __init__(self):
        self.calls: list[int] = []
        self.progress = True

    def encode(self, texts):
        self.calls.append(len(texts))
        return np.array([[len(t), sum(c in "aeiou" for c in t), 1.0, float(t.split()[-1])] for t in texts], dtype=np.float32)


def test_write_vectors_streams_chunks_into_the_same_table(tmp_path):
    from genrec_core.embed.stream import write_vectors

    rng = np.random.default_rng(0)
    full = rng.normal(size=(10, 5)).astype(np.float32)
    one, many = tmp_path / "one.parquet", tmp_path / "many.parquet"
    assert write_vectors([full], one, 10) == 5
    assert write_vectors((full[s : s + 3] for s in range(0, 10, 3)), many, 10) == 5
    a, b = pl.read_parquet(one), pl.read_parquet(many)
    assert b.schema == pl.Schema({"item_id": pl.Int32, "vector": pl.Array(pl.Float32, 5)})
    assert a.equals(b)
    assert b["item_id"].to_list() == list(range(10))
    np.testing.assert_array_equal(b["vector"].to_numpy(), full)
    import pyarrow.parquet as pq

    assert pq.ParquetFile(many).metadata.num_row_groups == 4  # one row group per chunk: 3 + 3 + 3 + 1
    with pytest.raises(Exception, match="expected 11"):
        write_vectors((full[s : s + 3] for s in range(0, 10, 3)), tmp_path / "bad.parquet", 11)
    assert not (tmp_path / "bad.parquet").exists() and not list(tmp_path.glob(".*tmp"))


def test_encode_chunks_calls_the_encoder_per_chunk_and_normalises_rows():
    from genrec_core.embed.stream import encode_chunks

    texts = [f"item text number {i}" for i in range(7)]
    enc = _RecordingEncoder()
    timer: dict = {}
    chunks = list(encode_chunks(enc, texts, normalize=True, timer=timer, chunk_items=3))
    assert enc.calls == [3, 3, 1] and enc.progress is False  # the stage's bar replaces the encoder's
    got = np.concatenate(chunks)
    raw = np.array([[len(t), sum(c in "aeiou" for c in t), 1.0, i] for i, t in enumerate(texts)])
    np.testing.assert_allclose(got, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-6)
    assert timer["encode_seconds"] >= 0
    enc = _RecordingEncoder()
    assert len(list(encode_chunks(enc, texts, normalize=False, chunk_items=10))) == 1 and enc.progress is True


def test_stage_streams_large_catalogues_chunk_by_chunk(tmp_path, monkeypatch, minilm_st):
    """With more items than a chunk, the stage encodes and writes chunk by chunk; the table equals
    MiniLM's vectors of the item texts (encoded independently here, all at once)."""
    import pyarrow.parquet as pq

    from genrec_core.embed import stream
    from stages import embed as stage

    items = _stage_items()
    _write_inputs(tmp_path, items)
    monkeypatch.setattr(stream, "CHUNK_ITEMS", 3)
    stage.run(Params(embed=EmbedParams(device="cpu", batch_size=2)), tmp_path)
    path = tmp_path / "data" / "embeddings" / "item_vectors.parquet"
    out = pl.read_parquet(path)
    assert out.schema == pl.Schema({"item_id": pl.Int32, "vector": pl.Array(pl.Float32, 384)})
    assert out["item_id"].to_list() == list(range(8))
    assert pq.ParquetFile(path).metadata.num_row_groups == 3
    texts = render_texts(items.sort("item_id"), "auto", INFO)
    np.testing.assert_allclose(out["vector"].to_numpy(), _unit(minilm_st.encode(texts)), atol=1e-5)
    report = json.loads((tmp_path / "reports" / "embed.json").read_text())
    assert report["n_items"] == 8 and report["dim"] == 384 and report["model_dim"] == 384 and report["encode_seconds"] > 0
