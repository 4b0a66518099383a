"""The default that is safe on a shared machine: the ``genrec`` command sets OMP_WAIT_POLICY=PASSIVE
before torch starts, unless the environment sets it (reports/benchmarks/oversubscription.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from genrec_core.runtime import OPENMP_ENV_DEFAULTS, set_openmp_env_defaults

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, os, sys
before = "torch" in sys.modules
import genrec_core.cli
after_cli = "torch" in sys.modules
print(json.dumps({"policy": os.environ.get("OMP_WAIT_POLICY"), "torch_before": before, "torch_after_cli": after_cli}))
"""


def probe(env_extra: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(env_extra, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_defaults_fill_only_what_is_unset():
    env: dict[str, str] = {}
    assert set_openmp_env_defaults(env) == {"OMP_WAIT_POLICY": "PASSIVE"} == OPENMP_ENV_DEFAULTS
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE", "OTHER": "1"}
    assert set_openmp_env_defaults(env) == {}
    assert env == {"OMP_WAIT_POLICY": "ACTIVE", "OTHER": "1"}


def test_the_cli_sets_passive_before_torch_is_imported():
    got = probe({})
    assert got == {"policy": "PASSIVE", "torch_before": False, "torch_after_cli": False}


def test_the_cli_keeps_a_policy_the_user_set():
    assert probe({"OMP_WAIT_POLICY": "ACTIVE"})["policy"] == "ACTIVE"
    assert probe({"OMP_WAIT_POLICY": "passive"})["policy"] == "passive"


def test_threads_param_keeps_its_meaning():
    """recommender.threads: 0 still leaves torch's default (one thread per core); N sets N."""
    from genrec_core.config import RecommenderParams, load_params

    assert RecommenderParams().threads == 0
    assert load_params(ROOT / "params.yaml").recommender.threads == 0


def test_shared_cpu_warning_names_the_thread_count_to_use(monkeypatch):
    from genrec_core import runtime

    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert runtime.shared_cpu_warning(2) is None  # a quiet machine
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (1.1, 0.0, 0.0))  # one other busy job
    warning = runtime.shared_cpu_warning(2)
    assert warning is not None and "recommender.threads=1" in warning
    assert runtime.shared_cpu_warning(1) is None  # one thread never waits for another
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (7.0, 0.0, 0.0))
    assert "recommender.threads=1" in runtime.shared_cpu_warning(2)
