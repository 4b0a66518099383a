"""recommender.precision: which autocast the training step and decoding run under."""

from __future__ import annotations

import pytest
import torch

from genrec_core.config import load_params
from genrec_core.errors import ParamError
from genrec_core.recommender.interface import amp_dtype_for, autocast_for, train_amp_dtype_for


def _matmul_dtype(device: str, precision: str) -> torch.dtype:
    layer = torch.nn.Linear(4, 4)
    with autocast_for(device, precision):
        return layer(torch.randn(2, 4)).dtype


def test_cpu_training_autocasts_only_when_asked():
    assert _matmul_dtype("cpu", "auto") == torch.float32  # the CPU default stays float32
    assert _matmul_dtype("cpu", "float32") == torch.float32
    assert _matmul_dtype("cpu", "bfloat16") == torch.bfloat16


def test_dtype_table():
    assert train_amp_dtype_for("cuda", "auto") is torch.bfloat16
    assert train_amp_dtype_for("cuda", "float32") is None
    assert train_amp_dtype_for("cpu", "bfloat16") is torch.bfloat16
    assert amp_dtype_for("cpu", "bfloat16") is None  # decoding on a CPU stays float32
    assert amp_dtype_for("cuda", "auto") is torch.bfloat16


def test_bf16_training_step_keeps_float32_weights_and_gradients():
    layer = torch.nn.Linear(8, 3)
    with autocast_for("cpu", "bfloat16"):
        loss = torch.nn.functional.cross_entropy(layer(torch.randn(5, 8)).float(), torch.tensor([0, 1, 2, 0, 1]))
    loss.backward()
    assert layer.weight.dtype == torch.float32 and layer.weight.grad.dtype == torch.float32


def test_unknown_precision_is_named(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("seed: 1\n")
    with pytest.raises(ParamError, match="recommender.precision"):
        load_params(params, ["recommender.precision=fp16"])


def test_item_id_baselines_always_train_in_float32():
    from types import SimpleNamespace

    from genrec_core.recommender.interface import training_precision

    assert training_precision(SimpleNamespace(model="decoder_only", precision="bfloat16")) == "bfloat16"
    assert training_precision(SimpleNamespace(model="tiger", precision="float32")) == "float32"
    for model in ("sasrec", "gru4rec"):
        assert training_precision(SimpleNamespace(model=model, precision="bfloat16")) == "auto"
