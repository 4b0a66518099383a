"""Scratch workspaces for benchmark runs of the ``genrec`` stages (used by ``benchmarks/convergence.py``
and ``scripts/converged.py``; nothing to run by itself).

A run is a name, a list of ``-S section.key=value`` overrides and the stages to run (``train``, or
``train`` then ``evaluate``; MTGRec's evaluate is preceded by its fine-tuning slots and
select-tokenizer: ``stage_commands``). Its workspace ``R = <work dir>/<name>`` gets:

* ``R/params.yaml``: a copy of the project's params.yaml (so a later edit of it is noticed);
* ``R/data/processed``, ``R/data/embeddings``, ``R/data/tokenizer``, ``R/data/ids``: symlinks to the
  upstream root's (read only; ``upstream_root``, default the project root), except what the overrides
  invalidate: an override of ``data.``, ``embed.``, ``tokenizer.`` or ``ids.`` reruns that stage and
  every later one of ``preprocess -> embed -> train-tokenizer -> emit-ids`` inside R
  (``upstream_stages``). A run whose stages are upstream stages (``stages=UPSTREAM``: a scratch
  upstream root of its own, as scripts/reproduction.py builds one per dataset) runs them inside R
  (``workspace_upstream``);
* ``R/overrides.json``: the overrides, a digest of the resolved params, the stages and the hashes of the linked
  upstream data folders (the reuse key), plus the thread count, the command, the times of the run and
  the peak resident memory (MiB) of each stage's process (``peak_rss_mb``);
* ``R/run.log``: stdout and stderr of every stage, each after a ``$ genrec ...`` line.

Each stage runs as ``python -m genrec_core.cli <stage> --root R --params R/params.yaml -S ... ``
with cwd R and ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` set to ``threads``; ``run_all`` runs
``jobs`` workspaces at once. A workspace whose ``overrides.json`` has the same key and whose
outputs exist (``reports/train/summary.json`` and ``valid_curve.csv``; ``reports/metrics.json`` with
evaluate) is reused without running anything, unless ``force``; a workspace with another key is
wiped first; one with the same key but unfinished is rerun in place (the trainer resumes from
``last.pt``). A failed run comes back with ``ok=False`` and the tail of its log.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: The stages before training, in pipeline order, with the params section and data folder of each.
UPSTREAM = ("preprocess", "embed", "train-tokenizer", "emit-ids")
UPSTREAM_SECTION = {"data": "preprocess", "embed": "embed", "tokenizer": "train-tokenizer", "ids": "emit-ids"}
UPSTREAM_OUTPUT = {"preprocess": "processed", "embed": "embeddings", "train-tokenizer": "tokenizer", "emit-ids": "ids"}
#: What an upstream stage run in a workspace leaves when it finished (its ``done_files``).
UPSTREAM_DONE = {
    "preprocess": "data/processed/test.parquet",
    "embed": "data/embeddings/item_vectors.parquet",
    "train-tokenizer": "data/tokenizer",
    "emit-ids": "data/ids/item_ids.parquet",
}
LOG_TAIL_LINES = 30
_print_lock = threading.Lock()


# --------------------------------------------------------------------------- override parsing


def split_overrides(text: str) -> list[str]:
    """``"a.b=1,c.d=[1,2]"`` -> ``["a.b=1", "c.d=[1,2]"]``: commas split only outside brackets/braces."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    out = [o.strip() for o in out if o.strip()]
    for o in out:
        if "=" not in o:
            raise ValueError(f"override {o!r} is not key=value (in {text!r})")
    return out


def parse_spec(text: str) -> tuple[str, list[str]]:
    """``"NAME=a.b=1,c.d=2"`` -> ``("NAME", ["a.b=1", "c.d=2"])``; a bare ``"NAME"`` has no overrides."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"bad run name in {text!r}; expected NAME=key=value,key=value")
    return name, (split_overrides(rest) if sep else [])


def override_key(override: str) -> str:
    """The dotted key of ``-S`` override (Hydra's ``+``/``++``/``~`` prefixes dropped)."""
    return override.partition("=")[0].strip().lstrip("+~")


def upstream_stages(overrides: list[str]) -> list[str]:
    """The stages before training that the overrides change, with everything downstream of them:
    ``tokenizer.levels=4`` -> ``["train-tokenizer", "emit-ids"]``; recommender-only -> ``[]``."""
    touched = [UPSTREAM.index(UPSTREAM_SECTION[s]) for s in (override_key(o).split(".")[0] for o in overrides) if s in UPSTREAM_SECTION]
    return list(UPSTREAM[min(touched) :]) if touched else []


def workspace_upstream(spec: RunSpec) -> list[str]:
    """The upstream stages a run builds inside its own workspace, in pipeline order: those its
    overrides invalidate (``upstream_stages``) and those it names among its stages (an upstream
    build: ``stages=UPSTREAM``)."""
    mine = set(upstream_stages(spec.overrides)) | {s for s in spec.stages if s in UPSTREAM}
    return [s for s in UPSTREAM if s in mine]


def data_root(upstream_root: Path | None = None) -> Path:
    """The ``data`` folder a workspace links to: ``upstream_root``'s, default the project root's."""
    return Path(upstream_root if upstream_root is not None else PROJECT_ROOT) / "data"


# --------------------------------------------------------------------------- runs


@dataclass
class RunSpec:
    name: str  # workspace folder name (unique within a work dir)
    overrides: list[str]
    stages: tuple[str, ...] = ("train",)
    info: dict[str, Any] = field(default_factory=dict)  # carried to the result (e.g. method, seed)


@dataclass
class RunResult:
    spec: RunSpec
    root: Path
    ok: bool
    reused: bool = False
    error: str = ""  # the failing command and the tail of run.log
    record: dict[str, Any] = field(default_factory=dict)  # overrides.json
    summary: dict[str, Any] = field(default_factory=dict)  # reports/train/summary.json
    curve: list[dict[str, float]] = field(default_factory=list)  # reports/train/valid_curve.csv
    metrics: dict[str, Any] = field(default_factory=dict)  # reports/metrics.json (with evaluate)

    def short_error(self) -> str:
        """One line for a report: which command failed and the last line of its log."""
        lines = [ln for ln in self.error.splitlines() if ln.strip()]
        if not lines:
            return ""
        head = lines[0].split("; last lines of")[0]
        return head if len(lines) == 1 else f"{head}: {lines[-1].strip()}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def absolute_overrides(overrides: list[str]) -> list[str]:
    """Dataset/cache paths made absolute (stages run with cwd = the workspace); ``data.`` overrides
    also get the project's ml-100k download cache unless they name one."""
    from genrec_core.config import absolute_path_overrides

    out = absolute_path_overrides(list(overrides))
    if any(override_key(o).startswith("data.") for o in out) and not any(override_key(o) == "data.cache_dir" for o in out):
        out.append(f"data.cache_dir={PROJECT_ROOT / 'data' / 'raw'}")
    return out


def check_overrides(params_file: Path, overrides: list[str]) -> None:
    """Fail now (not in a subprocess an hour later) on an unknown key or an impossible value."""
    from genrec_core.config import load_params

    load_params(params_file, overrides)


def stage_commands(stages: tuple[str, ...], params_file: Path, overrides: list[str]) -> list[list[str]]:
    """The ``genrec`` commands (arguments after ``genrec``) of ``stages``: with
    ``recommender.method: mtgrec``, evaluate tests the fine-tuned model that select-tokenizer picks,
    so ``finetune --slot R`` for every ``finetune.slots`` entry and ``select-tokenizer`` come first
    (as dvc.yaml orders them); every other method runs the stages as named."""
    from genrec_core.config import load_params

    params = load_params(params_file, list(overrides)) if "evaluate" in stages else None
    out: list[list[str]] = []
    for stage in stages:
        if stage == "evaluate" and params.recommender.method == "mtgrec":
            out += [["finetune", "--slot", str(r)] for r in params.finetune.slots]
            out.append(["select-tokenizer"])
        out.append([stage])
    return out


def done_files(stages: tuple[str, ...]) -> list[str]:
    files = [UPSTREAM_DONE[s] for s in stages if s in UPSTREAM_DONE]
    if "train" in stages:
        files += ["reports/train/summary.json", "reports/train/valid_curve.csv"]
    if "evaluate" in stages:
        files.append("reports/metrics.json")
    return files


def tree_digest(folder: Path) -> str:
    """sha256 over the names and contents of every file under ``folder`` (symlinks followed)."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + b"\0" + sha256(path).encode())
    return h.hexdigest()


def params_digest(params_file: Path, overrides: list[str] | tuple[str, ...] = (), sections: tuple[str, ...] | None = None, data: Path | None = None) -> str:
    """sha256 of the params a run resolves to (the file, then its overrides; every key, defaults
    filled in): comments, key order, keys added at their default values and an override that
    restates the file's value do not change it; any effective value does. ``sections``: only
    these params sections (a build of the upstream stages reads no other). ``data``: the project
    root whose ``data/processed`` the run trains on, from which ``dropout: auto`` is resolved under
    ``epochs: auto`` (without it, or before that folder exists, it stays ``auto``)."""
    from genrec_core.config import load_params, params_record
    from genrec_core.training import resolve_item_embedding

    params = load_params(params_file, list(overrides))
    rp = resolve_item_embedding(params.recommender)[0]  # item_embedding auto: what it means for this run
    params = dataclasses.replace(params, recommender=resolved_dropout(rp, data))
    resolved = params_record(params)  # the tokenizer section flat, as before kind_params
    resolved["data"].pop("cache_dir", None)  # where verified downloads are cached: not what a run computes (a clone elsewhere shares its runs)
    if sections is not None:
        resolved = {k: v for k, v in resolved.items() if k in sections}
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()


def resolved_dropout(rp: Any, data: Path | None) -> Any:
    """``rp`` with ``dropout: auto`` as the run resolves it (it follows the schedule's length; the
    schedule's ``epochs: auto`` itself stays as written, the data digest covers it)."""
    from genrec_core.paths import ArtifactPaths
    from genrec_core.recommender.schedule import artifact_counts, auto_epochs, resolve_dropout

    if rp.dropout != "auto":
        return rp
    if isinstance(rp.epochs, int):
        return resolve_dropout(rp)[0]
    paths = ArtifactPaths(Path(data)) if data is not None else None
    if paths is None or not (paths.items.exists() and paths.examples("train").exists()):
        return rp
    return resolve_dropout(rp, auto_epochs(*artifact_counts(paths))[0])[0]


def reads_tokenizer_folder(params_file: Path, overrides: list[str] | tuple[str, ...]) -> bool:
    """Whether the run's own stages read ``data/tokenizer``: only BLOGER's train stage does (it
    trains the kept RQ-VAE itself); every other run reads the IDs (``data/ids``) alone."""
    from genrec_core.config import load_params

    return load_params(params_file, list(overrides)).recommender.method == "bloger"


def reuse_key(spec: RunSpec, params_file: Path, upstream_root: Path | None = None) -> dict[str, Any]:
    """What must match for a finished workspace to be reused: the params the run resolves to
    (params file + overrides), the stages, and the contents of the upstream data folders the
    workspace links to and reads (``data/tokenizer`` only for BLOGER: a tokenizer folder rebuilt
    with the same IDs, e.g. its kept files now holding the decoder, leaves other runs valid).
    (The overrides themselves are kept in the record for reading.)"""
    rebuilt = {UPSTREAM_OUTPUT[s] for s in workspace_upstream(spec)}
    overrides = absolute_overrides(spec.overrides)
    if not reads_tokenizer_folder(params_file, overrides):
        rebuilt.add("tokenizer")
    inputs = {sub: tree_digest(data_root(upstream_root) / sub) for sub in UPSTREAM_OUTPUT.values() if sub not in rebuilt}
    # dropout auto is resolved from the processed data the workspace links to (kept auto when it builds its own)
    data = Path(upstream_root if upstream_root is not None else PROJECT_ROOT) if "processed" in inputs else None
    digest = params_digest(params_file, overrides, digest_sections(spec.stages), data)
    return {"resolved_params": digest, "stages": list(spec.stages), "inputs": inputs}


def digest_sections(stages: tuple[str, ...] | list[str]) -> tuple[str, ...] | None:
    """The params sections a workspace's reuse digest covers: an upstream build (``UPSTREAM``)
    only its stages' sections, so a recommender param added or changed leaves it reusable;
    every other run all of them."""
    return tuple(UPSTREAM_SECTION) if tuple(stages) == UPSTREAM else None


def record_matches(root: Path, record: dict[str, Any] | None, key: dict[str, Any]) -> bool:
    """Whether the workspace's overrides.json has ``key``. When the recorded params digest
    differs (or the record predates it), the params copy the workspace kept and its recorded
    overrides are resolved again by today's code: a param added to the code since (at a default
    that keeps the old behaviour) changes every digest but not what the run did."""
    if record is None:
        return False
    if record.get("resolved_params") != key.get("resolved_params") and (root / "params.yaml").exists():
        try:
            record = {
                **record,
                "resolved_params": params_digest(
                    root / "params.yaml",
                    absolute_overrides(record.get("overrides", [])),
                    digest_sections(record.get("stages", [])),
                    root if "processed" in key.get("inputs", {}) else None,  # as reuse_key resolved dropout auto
                ),
            }
        except Exception:  # a copy today's code rejects cannot match
            return False
    recorded_inputs = record.get("inputs") or {}
    same_inputs = all(recorded_inputs.get(sub) == digest for sub, digest in key["inputs"].items())  # a folder the key leaves out is not compared
    return same_inputs and all(record.get(k) == v for k, v in key.items() if k != "inputs")


def is_finished(root: Path, key: dict[str, Any]) -> bool:
    record = read_json(root / "overrides.json")
    return record_matches(root, record, key) and all((root / f).exists() for f in done_files(tuple(key["stages"])))


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_curve(path: Path) -> list[dict[str, float]]:
    """valid_curve.csv rows as floats (``epoch`` and ``step`` as ints)."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [{k: (int(float(v)) if k in ("epoch", "step") else float(v)) for k, v in r.items() if v not in (None, "")} for r in rows]


def stage_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    n = str(threads)
    env.update(OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no run.log)"
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


def say(message: str) -> None:
    with _print_lock:
        print(message, flush=True)


def prepare_workspace(root: Path, spec: RunSpec, params_file: Path, force: bool, upstream_root: Path | None = None) -> None:
    """Create (or wipe and recreate) R: params copy and symlinks to the upstream root's data outputs."""
    key = reuse_key(spec, params_file, upstream_root)
    record = read_json(root / "overrides.json")
    if force or (record is not None and not record_matches(root, record, key)) or (root.exists() and record is None):
        if root.exists() and any(root.iterdir()) and not ((root / "overrides.json").exists() or (root / "run.log").exists()):
            raise FileExistsError(f"{root} exists and is not a benchmark workspace (no overrides.json or run.log); not wiping it")
        shutil.rmtree(root, ignore_errors=True)
    (root / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy2(params_file, root / "params.yaml")
    rebuilt = {UPSTREAM_OUTPUT[s] for s in workspace_upstream(spec)}
    for sub in UPSTREAM_OUTPUT.values():
        link, target = root / "data" / sub, data_root(upstream_root) / sub
        if sub in rebuilt:
            if link.is_symlink():
                link.unlink()
            continue
        if not target.exists():
            raise FileNotFoundError(
                f"{target} missing: " + (f"run `dvc repro` in {PROJECT_ROOT} first" if upstream_root is None else "build that upstream root first")
            )
        if not link.is_symlink():
            shutil.rmtree(link, ignore_errors=True)
            link.symlink_to(target, target_is_directory=True)


def run_measured(cmd: list[str], cwd: Path, env: dict[str, str], out) -> tuple[int, float]:
    """(exit status, peak resident memory in MiB) of ``cmd``, its output to ``out``: ``os.wait4``
    gives this child's own resource usage (not the maximum over every child, as
    ``RUSAGE_CHILDREN`` would with parallel jobs). Linux counts the spawning parent's resident size
    at the spawn into the child's peak: small next to a training stage's, as the runner is small."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, round(usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def run_one(
    spec: RunSpec, work_dir: Path, params_file: Path, threads: int, force: bool = False, command: str = "", upstream_root: Path | None = None
) -> RunResult:
    """Prepare the workspace of one run, run its stages (unless reusable) and read its outputs."""
    root = (work_dir / spec.name).resolve()
    key = reuse_key(spec, params_file, upstream_root)
    reused = not force and is_finished(root, key)
    if reused:
        say(f"[{spec.name}] reused {root} (same resolved params and inputs, outputs present; --force retrains)")
    else:
        prepare_workspace(root, spec, params_file, force, upstream_root)
        record = {
            **key,
            "overrides": list(spec.overrides),
            "name": spec.name,
            "threads": threads,
            "command": command,
            "upstream": workspace_upstream(spec),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(),
        }
        (root / "overrides.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        env, log = stage_env(threads), root / "run.log"
        t0 = time.perf_counter()
        say(f"[{spec.name}] started in {root} ({threads} thread(s)); log: {log}")
        later = tuple(s for s in spec.stages if s not in UPSTREAM)
        for stage in [*([u] for u in workspace_upstream(spec)), *stage_commands(later, root / "params.yaml", spec.overrides)]:
            cmd = [sys.executable, "-m", "genrec_core.cli", *stage, "--root", str(root), "--params", str(root / "params.yaml")]
            for ov in spec.overrides:
                cmd += ["-S", ov]
            shown = shlex.join(["genrec", *cmd[3:]])
            with log.open("a", encoding="utf-8") as f:
                f.write(f"\n$ {shown}\n")
                f.flush()
                rc, peak = run_measured(cmd, root, env, f)
            record.setdefault("peak_rss_mb", {})[stage[0]] = max(peak, record.get("peak_rss_mb", {}).get(stage[0], 0.0))
            if rc != 0:
                error = f"`{shown}` exited with status {rc}; last lines of {log}:\n{log_tail(log)}"
                say(f"[{spec.name}] FAILED ({' '.join(stage)}, status {rc})")
                return RunResult(spec, root, ok=False, error=error, record=record)
        record["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        record["wall_seconds"] = round(time.perf_counter() - t0, 1)
        (root / "overrides.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        say(f"[{spec.name}] done in {record['wall_seconds']:.0f} s")
    result = load_result(spec, root)
    result.reused = reused
    return result


def load_result(spec: RunSpec, root: Path) -> RunResult:
    """The outputs of a finished workspace (a missing one: ``ok=False`` with the reason)."""
    missing = [f for f in done_files(spec.stages) if not (root / f).exists()]
    record = read_json(root / "overrides.json") or {}
    if missing:
        return RunResult(spec, root, ok=False, error=f"missing outputs {missing}; log tail:\n{log_tail(root / 'run.log')}", record=record)
    res = RunResult(spec, root, ok=True, record=record)
    if "train" in spec.stages:
        res.summary = read_json(root / "reports/train/summary.json") or {}
        res.curve = read_curve(root / "reports/train/valid_curve.csv")
    if "evaluate" in spec.stages:
        res.metrics = read_json(root / "reports/metrics.json") or {}
    return res


def run_all(
    specs: list[RunSpec],
    work_dir: Path,
    params_file: Path | None = None,
    jobs: int = 1,
    threads: int = 1,
    force: bool = False,
    command: str = "",
    upstream_root: Path | None = None,
) -> list[RunResult]:
    """Every run (``jobs`` at a time), results in ``specs`` order; failures are returned, not raised.
    ``upstream_root``: the root whose data/{processed,embeddings,tokenizer,ids} the workspaces link to
    (default the project root)."""
    params_file = Path(params_file or PROJECT_ROOT / "params.yaml").resolve()
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must be unique: {names}")
    for spec in specs:
        spec.overrides = absolute_overrides(spec.overrides)
        check_overrides(params_file, spec.overrides)
    work_dir = Path(work_dir).resolve()
    if work_dir == PROJECT_ROOT or PROJECT_ROOT / "data" in (work_dir, *work_dir.parents):
        raise ValueError(f"--work-dir {work_dir}: choose a scratch folder outside the project's data (e.g. /tmp/...)")
    work_dir.mkdir(parents=True, exist_ok=True)

    def one(spec: RunSpec) -> RunResult:
        try:
            result = run_one(spec, work_dir, params_file, threads, force, command, upstream_root)
        except Exception as exc:  # a broken workspace must not take the other runs down
            result = RunResult(spec, (work_dir / spec.name).resolve(), ok=False, error=f"{type(exc).__name__}: {exc}")
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(one, specs))
    return results


def report_failures(results: list[RunResult]) -> int:
    """Print every failed run with its log tail; the number of failures."""
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"\n=== run {r.spec.name} FAILED ({r.root}) ===\n{r.error}\n", file=sys.stderr)
    return len(failed)


# --------------------------------------------------------------------------- machine description


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(threads: int | str, jobs: int) -> str:
    import torch

    return (
        f"Machine: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__}; "
        f"{threads} thread(s) per run (OMP_NUM_THREADS/MKL_NUM_THREADS), {jobs} run(s) in parallel; "
        f"{datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}."
    )


def command_line() -> str:
    """The command that is running, as it could be retyped (``python <script> <args>``)."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(PROJECT_ROOT)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])
