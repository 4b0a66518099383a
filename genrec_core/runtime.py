"""Device selection and seeding shared by every stage that runs a model."""

from __future__ import annotations

import contextlib
import os
import random


def resolve_device(name: str = "auto") -> str:
    """'auto' picks cuda, then mps, then cpu; an explicit name is returned as given."""
    if name != "auto":
        return name
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@contextlib.contextmanager
def eval_mode(model):
    """Dropout off while ranking; the caller's train/eval flag of every module restored after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training


def seed_everything(seed: int) -> None:
    """Fix Python, NumPy and torch RNGs; on the CPU a seed then fixes the whole run."""
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    import numpy as np

    np.random.seed(seed)
    try:
        import torch
    except ImportError:  # stages that do not need torch still seed the rest
        return
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
