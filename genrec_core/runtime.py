"""Device selection and seeding shared by every stage that runs a model."""

from __future__ import annotations

import contextlib
import os
import random

#: What the ``genrec`` command puts in its environment before torch starts, where the environment
#: does not set it already (``set_openmp_env_defaults``): torch's OpenMP threads wait for work by
#: sleeping instead of spinning. Spinning threads only pay when every thread has a core of its own;
#: beside another busy process (``dvc queue start -j 2``, a second training job) a spinning thread
#: takes the core the thread it waits for needs, and a 2-thread epoch took 907 s instead of ~50 s.
#: Measured in reports/benchmarks/oversubscription.md. Read once, when the OpenMP runtime starts.
OPENMP_ENV_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def set_openmp_env_defaults(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Put each of ``OPENMP_ENV_DEFAULTS`` the environment lacks into it (``os.environ`` by default,
    so child processes such as torchrun's inherit it); returns what was set. It takes effect only
    when called before the OpenMP runtime starts (before ``import torch`` in this process); an
    explicit ``OMP_WAIT_POLICY=ACTIVE`` (or any value) is left as it is."""
    env = os.environ if environ is None else environ
    added = {k: v for k, v in OPENMP_ENV_DEFAULTS.items() if k not in env}
    env.update(added)
    return added


def shared_cpu_warning(threads: int) -> str | None:
    """A warning when ``threads`` torch threads outnumber the CPUs this process may use that the
    1-minute load average leaves free (other jobs running), else None. Only a warning: choosing the
    thread count from the load would make a run's floats depend on what else ran (results are
    bit-identical only at one thread count). Beside busy jobs fewer threads are faster and fairer
    (reports/benchmarks/oversubscription.md)."""
    try:
        cpus = len(os.sched_getaffinity(0))
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not Linux
        return None
    free = max(1, int(cpus - load + 0.5))
    if threads <= 1 or threads <= free:
        return None
    return (
        f"{threads} torch threads on {cpus} CPUs with a 1-minute load of {load:.1f}: other jobs are running and the threads will wait for each "
        f"other; set recommender.threads={free} (or OMP_NUM_THREADS={free}) for runs beside them"
    )


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
