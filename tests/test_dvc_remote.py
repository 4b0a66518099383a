"""Sharing pipeline artifacts through a DVC remote (README "Share artifacts: DVC remotes").

A real push and pull against a local-directory remote: a stage's output is reproduced, pushed,
deleted together with the cache, and pulled back byte for byte; a DVC experiment is pushed to a
git remote (a bare repository) with ``dvc exp push`` and listed from it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

STAGE = """stages:
  make:
    cmd: python make.py
    deps: [make.py]
    params: [n]
    outs: [out]
"""
MAKE = """import pathlib, yaml
n = yaml.safe_load(open("params.yaml"))["n"]
pathlib.Path("out").mkdir(exist_ok=True)
pathlib.Path("out/numbers.txt").write_text("".join(f"{i * i}\\n" for i in range(n)))
"""


def run(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}
    cmd = [sys.executable, "-m", "dvc", *args[1:]] if args[0] == "dvc" else list(args)
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"{' '.join(args)}: {out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.fixture()
def project(tmp_path):
    repo = tmp_path / "project"
    repo.mkdir()
    run(repo, "git", "init", "-q", "-b", "main")
    run(repo, "dvc", "init", "-q")
    (repo / "dvc.yaml").write_text(STAGE)
    (repo / "make.py").write_text(MAKE)
    (repo / "params.yaml").write_text("n: 5\n")
    run(repo, "dvc", "remote", "add", "-d", "shared", str(tmp_path / "remote"))
    run(repo, "dvc", "repro", "-q")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "pipeline")
    return repo


def test_push_then_pull_restores_a_stage_output(project, tmp_path):
    expected = (project / "out" / "numbers.txt").read_text()
    assert expected == "0\n1\n4\n9\n16\n"
    run(project, "dvc", "push", "-q")
    assert any((tmp_path / "remote").rglob("*")), "nothing reached the remote"
    # a teammate's clone: the git repository without the artifacts
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(project), str(clone))
    assert not (clone / "out").exists()
    run(clone, "dvc", "pull", "-q")
    assert (clone / "out" / "numbers.txt").read_text() == expected
    assert "up to date" in run(clone, "dvc", "status").lower()


def test_an_experiment_is_pushed_to_a_git_remote_and_listed_from_it(project, tmp_path):
    bare = tmp_path / "origin.git"
    run(tmp_path, "git", "init", "-q", "--bare", "-b", "main", str(bare))
    run(project, "git", "remote", "add", "origin", str(bare))
    run(project, "git", "push", "-q", "origin", "main")
    run(project, "dvc", "exp", "run", "-q", "-n", "n7", "-S", "n=7")
    run(project, "dvc", "exp", "push", "origin", "n7")
    listed = run(project, "dvc", "exp", "list", "origin")
    assert "n7" in listed
    # the experiment's output went to the DVC remote with it: pull it into a fresh clone
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(bare), str(clone))
    run(clone, "dvc", "exp", "pull", "origin", "n7")
    run(clone, "dvc", "exp", "apply", "n7")
    run(clone, "dvc", "checkout", "-q")
    assert (clone / "out" / "numbers.txt").read_text().splitlines()[-1] == "36"
