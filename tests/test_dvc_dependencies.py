"""dvc.yaml declares every file a stage reads and writes (ARCHITECTURE.md: "a test checks this").

Code: a stage's command (``genrec <command>``) runs ``genrec_core/cli.py`` and the stage module it
dispatches to (``stages/<module>.py``). Every project module these import, transitively, at module
level or inside a function (package ``__init__`` files included, ``if TYPE_CHECKING:`` blocks
skipped), must lie under one of the stage's ``deps``. Imports are resolved statically with ``ast``;
``importlib.import_module`` of a constant name counts, and of an f-string with a constant package
prefix counts as the whole package (the data sources' registry). The CLI's ``stages.<module>``
dispatch is the one dynamic import not followed: its target is the stage module itself. The
bodies of ``genrec`` commands that are no stage (``recommend``, ``export``, ``serve``,
``overrides``: they never call ``_run_stage``) are not followed in cli.py either: a stage's command
never runs them. Nor are the imports of ``params_validation.validate_everything``: it only rejects params at
every command's start, so the registries it reads (methods, losses, models) cannot change an
output. Modules
that hold nothing but a docstring, ``__version__``/``__all__`` and ``from __future__`` imports
cannot change an output and need not be declared.

Data: the stages run on a tiny synthetic dataset in a temporary root (working directory there, so
a relative write lands inside it too); every file a stage creates or replaces must lie under one
of its ``outs``/``metrics``/``plots``, and every declared output must exist afterwards (DVC fails
on a missing one). Every data dependency is some other stage's output or a file in the repository.

Layers: the library, scripts and benchmarks never import a stage module; no stage module imports
another one.
"""

from __future__ import annotations

import ast
import copy
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("genrec_core", "stages")
CLI = REPO / "genrec_core" / "cli.py"
#: Dynamic imports with this prefix are the CLI's dispatch to the stage module (a root already).
DISPATCH_PREFIX = "stages."
#: Functions whose imports are not followed, by file: they only check params (a bad value stops the
#: run; a good one changes nothing), so preprocess need not depend on the methods' code.
VALIDATION_ONLY = {REPO / "genrec_core" / "params_validation.py": frozenset({"validate_everything"})}


def load_dvc_yaml() -> dict:
    """dvc.yaml with every ``foreach`` stage expanded as DVC does (``name@item``), over a list
    written inline or a ``${section.key}`` of params.yaml."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))
    dvc["stages"] = expand_foreach(dvc["stages"], yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8")))
    return dvc


def _resolve(value, params: dict):
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        node = params
        for part in value[2:-1].split("."):
            node = node[part]
        return node
    return value


def _substitute(node, item):
    if isinstance(node, str):
        return node.replace("${item}", str(item))
    if isinstance(node, list):
        return [_substitute(v, item) for v in node]
    if isinstance(node, dict):
        return {_substitute(k, item): _substitute(v, item) for k, v in node.items()}
    return node


def expand_foreach(stages: dict, params: dict) -> dict:
    """``{name: {foreach: [a, b], do: {...${item}...}}}`` -> ``{name@a: ..., name@b: ...}`` (lists)."""
    out = {}
    for name, stage in stages.items():
        if "foreach" not in stage:
            out[name] = stage
            continue
        items = _resolve(stage["foreach"], params)
        assert isinstance(items, list) and items, f"stage {name}: foreach must give a non-empty list, got {items!r}"
        for item in items:
            out[f"{name}@{item}"] = _substitute(stage["do"], item)
    return out


# --------------------------------------------------------------------------- static imports


def module_file(name: str) -> Path | None:
    """The repository file of a project module (``a.b`` -> a/b.py or a/b/__init__.py), else None."""
    parts = name.split(".")
    if not name or parts[0] not in PROJECT_PACKAGES:
        return None
    base = REPO.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, skip: frozenset[str] = frozenset()) -> Iterator[ast.AST]:
    """Every node, except the bodies of ``if TYPE_CHECKING:`` (never run) and of the functions
    named in ``skip``."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in skip:
        return
    yield node
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        children = node.orelse
    else:
        children = list(ast.iter_child_nodes(node))
    for child in children:
        yield from _walk(child, skip)


def _package_modules(package: str) -> set[str]:
    folder = REPO.joinpath(*package.split("."))
    return {module_name(p) for p in folder.rglob("*.py")} if folder.is_dir() else set()


def imported_names(path: Path, skip: frozenset[str] = frozenset()) -> set[str]:
    """Dotted names a module imports (statically), before checking which are project modules
    (imports inside the functions named in ``skip`` left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    names: set[str] = set()
    for node in _walk(tree, skip):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # kept only when a module
        elif isinstance(node, ast.Call) and node.args and _is_import_module(node.func):
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.add(arg.value)
            elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                prefix = str(arg.values[0].value)
                if prefix.endswith(".") and prefix != DISPATCH_PREFIX:
                    names.update(_package_modules(prefix.rstrip(".")))
    return names


def _is_import_module(func: ast.expr) -> bool:
    return (isinstance(func, ast.Attribute) and func.attr == "import_module") or (isinstance(func, ast.Name) and func.id == "import_module")


def imported_modules(path: Path, skip: frozenset[str] = frozenset()) -> set[str]:
    """Project modules importing ``path`` runs: each imported name and its parent packages."""
    out = set()
    for name in imported_names(path, skip):
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {name for name in out if module_file(name) is not None}


def import_closure(roots: list[Path], skip: dict[Path, frozenset[str]] | None = None) -> set[Path]:
    """Every project file the roots import, transitively (the roots and their packages included;
    ``skip``: {file: functions of it whose imports are not followed})."""
    skip = skip or {}
    todo = [*roots]
    for root in roots:  # importing a module runs its packages' __init__ first
        parts = module_name(root).split(".")
        todo += [f for i in range(1, len(parts)) if (f := module_file(".".join(parts[:i]))) is not None]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(module_file(name) for name in imported_modules(path, skip.get(path, frozenset())))
    return seen


def is_inert(path: Path) -> bool:
    """Only a docstring, ``__version__``/``__all__`` constants and ``from __future__`` imports."""
    for i, node in enumerate(ast.parse(path.read_text(encoding="utf-8")).body):
        if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id in ("__version__", "__all__") for t in node.targets):
            continue
        return False
    return True


# --------------------------------------------------------------------------- dvc.yaml


def cli_commands() -> dict[str, str]:
    """``genrec`` command name -> the stage module ``_run_stage`` dispatches it to (from cli.py)."""
    commands = {}
    for node in ast.parse(CLI.read_text(encoding="utf-8")).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for dec in node.decorator_list:
            if isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute) and dec.func.attr == "command":
                name = dec.args[0].value if dec.args and isinstance(dec.args[0], ast.Constant) else node.name.replace("_", "-")
                for call in ast.walk(node):
                    if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "_run_stage":
                        commands[name] = call.args[0].value
    return commands


def non_stage_commands() -> frozenset[str]:
    """Functions of cli.py's commands that never call ``_run_stage`` (recommend, export, serve, ...)."""
    names = set()
    for node in ast.parse(CLI.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef) and any(
            isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr == "command" for d in node.decorator_list
        ):
            if not any(isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and c.func.id == "_run_stage" for c in ast.walk(node)):
                names.add(node.name)
    return frozenset(names)


def stage_options(cmd: str) -> dict[str, int | str]:
    """The ``--name value`` options after ``genrec <command>`` (``--slot 3`` -> {"slot": 3})."""
    words = shlex.split(cmd)[2:]
    assert len(words) % 2 == 0 and all(w.startswith("--") for w in words[::2]), f"stage command {cmd!r}: expected --name value options"
    return {k[2:].replace("-", "_"): int(v) if v.isdigit() else v for k, v in zip(words[::2], words[1::2])}


def stage_module(cmd: str) -> Path:
    words = shlex.split(cmd)
    assert words[0] == "genrec" and len(words) >= 2, f"stage command {cmd!r}: expected 'genrec <command>'"
    module = cli_commands().get(words[1])
    assert module is not None, f"stage command {cmd!r}: genrec has no stage command {words[1]!r}"
    path = REPO / "stages" / f"{module}.py"
    assert path.is_file(), path
    return path


def entry_paths(entries: list | None) -> list[str]:
    """Paths of deps/outs entries (a string, or a one-key mapping of path -> options)."""
    out = []
    for entry in entries or []:
        out.extend([entry] if isinstance(entry, str) else list(entry))
    return [p.rstrip("/") for p in out]


def stage_outputs(stage: dict) -> list[str]:
    return entry_paths(stage.get("outs")) + entry_paths(stage.get("metrics")) + entry_paths(stage.get("plots"))


def covered(path: str, declared: list[str]) -> bool:
    """A declared path covers itself and, as a directory, everything under it."""
    return any(path == d or path.startswith(d + "/") for d in declared)


def missing_code_deps(dvc: dict) -> dict[str, list[str]]:
    """{stage: project files its command imports that none of its deps covers}."""
    missing = {}
    for name, stage in dvc["stages"].items():
        files = import_closure([CLI, stage_module(stage["cmd"])], {CLI: non_stage_commands(), **VALIDATION_ONLY})
        deps = entry_paths(stage.get("deps"))
        rel = sorted(str(f.relative_to(REPO)) for f in files if not is_inert(f))
        if gaps := [f for f in rel if not covered(f, deps)]:
            missing[name] = gaps
    return missing


def dangling_data_deps(dvc: dict) -> dict[str, list[str]]:
    """{stage: data deps that are neither another stage's output nor a file in the repository}."""
    outputs = {name: stage_outputs(stage) for name, stage in dvc["stages"].items()}
    dangling = {}
    for name, stage in dvc["stages"].items():
        others = [o for other, outs in outputs.items() if other != name for o in outs]
        gaps = [
            d
            for d in entry_paths(stage.get("deps"))
            if not (REPO / d).exists() or d.startswith(("data/", "reports/"))  # an artifact, not source
            if not any(d == o or d.startswith(o + "/") or o.startswith(d + "/") for o in others)
        ]
        if gaps:
            dangling[name] = gaps
    return dangling


def without(dvc: dict, stage: str, path: str) -> dict:
    """A copy of the dvc.yaml data with ``path`` taken out of one stage's deps and outputs."""
    dvc = copy.deepcopy(dvc)
    found = False
    for key in ("deps", "outs", "metrics", "plots"):
        entries = dvc["stages"][stage].get(key) or []
        kept = [e for e in entries if path not in ([e] if isinstance(e, str) else list(e))]
        found |= len(kept) < len(entries)
        dvc["stages"][stage][key] = kept
    assert found, f"{path} is not declared by stage {stage}"
    return dvc


def undeclared_writes(dvc: dict, written: dict[str, set[str]]) -> dict[str, list[str]]:
    """{stage: files it wrote (``written``) that none of its outs/metrics/plots covers}."""
    out = {}
    for name, files in written.items():
        if gaps := sorted(f for f in files if not covered(f, stage_outputs(dvc["stages"][name]))):
            out[name] = gaps
    return out


# --------------------------------------------------------------------------- layers


def _modules_under(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


def test_library_scripts_and_benchmarks_never_import_a_stage():
    offenders = {
        str(p.relative_to(REPO)): sorted(n for n in imported_names(p) if n == "stages" or n.startswith("stages."))
        for p in _modules_under("genrec_core", "scripts", "benchmarks")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_stage_module_imports_another():
    offenders = {str(p.relative_to(REPO)): sorted(n for n in imported_modules(p) if n.startswith("stages.")) for p in _modules_under("stages")}
    assert {k: v for k, v in offenders.items() if v} == {}


# --------------------------------------------------------------------------- code deps


def test_every_stage_runs_a_genrec_stage_command():
    dvc = load_dvc_yaml()
    assert dvc["stages"]
    for stage in dvc["stages"].values():
        stage_module(stage["cmd"])
        stage_options(stage["cmd"])


def test_the_finetune_fan_out_is_one_stage_per_slot():
    raw = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]["finetune"]
    assert raw["foreach"] == "${finetune.slots}"
    slots = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))["finetune"]["slots"]
    stages = load_dvc_yaml()["stages"]
    assert [n for n in stages if n.startswith("finetune@")] == [f"finetune@{s}" for s in slots]
    for s in slots:
        assert stage_options(stages[f"finetune@{s}"]["cmd"]) == {"slot": s}
        assert entry_paths(stages[f"finetune@{s}"]["outs"]) == [f"data/finetune/{s}", f"reports/method/finetune/{s}"]


def test_the_import_resolver_follows_function_level_relative_and_registry_imports():
    evaluate = {str(p.relative_to(REPO)) for p in import_closure([REPO / "stages" / "evaluate.py"])}
    # imported inside run(): the sequential runner, and what it imports inside its functions
    assert {"genrec_core/sequential/runner.py", "genrec_core/sequential/training.py", "genrec_core/evaluation/predictions.py"} <= evaluate
    assert "genrec_core/sequential/__init__.py" in evaluate and "genrec_core/sequential/models.py" in evaluate
    preprocess = {str(p.relative_to(REPO)) for p in import_closure([REPO / "stages" / "preprocess.py"])}
    # the data sources are imported by name through a registry (importlib)
    assert {"genrec_core/data/sources/movielens.py", "genrec_core/data/sources/yelp.py"} <= preprocess
    assert is_inert(REPO / "genrec_core" / "__init__.py") and not is_inert(REPO / "genrec_core" / "io.py")
    assert not any(p.startswith("stages/") and p != "stages/evaluate.py" and p != "stages/__init__.py" for p in evaluate)


def test_deps_cover_every_module_a_stage_imports():
    assert missing_code_deps(load_dvc_yaml()) == {}


def test_the_commands_that_are_no_stage_are_not_followed_but_their_imports_exist():
    assert {"recommend", "export", "serve", "overrides"} <= non_stage_commands()
    assert not non_stage_commands() & {"preprocess", "embed", "train_tokenizer", "train", "evaluate"}  # stage commands are followed
    closure = {str(p.relative_to(REPO)) for p in import_closure([CLI], {CLI: non_stage_commands()})}
    assert not any(p.startswith("genrec_core/serving/") for p in closure)
    assert "genrec_core/serving/commands.py" in {str(p.relative_to(REPO)) for p in import_closure([CLI])}


def test_the_params_validation_is_not_followed_but_reaches_the_registries():
    config = REPO / "genrec_core" / "params_validation.py"
    functions = {n.name for n in ast.walk(ast.parse(config.read_text(encoding="utf-8"))) if isinstance(n, ast.FunctionDef)}
    assert VALIDATION_ONLY[config] <= functions  # a renamed function would silently be followed again
    roots = [CLI, REPO / "stages" / "preprocess.py"]
    followed = {str(p.relative_to(REPO)) for p in import_closure(roots, {CLI: non_stage_commands(), **VALIDATION_ONLY})}
    everything = {str(p.relative_to(REPO)) for p in import_closure(roots, {CLI: non_stage_commands()})}
    assert "genrec_core/methods/__init__.py" not in followed and "genrec_core/methods/__init__.py" in everything


@pytest.mark.parametrize(
    "stage, dep, expected",
    [
        ("train", "stages/train.py", ["stages/train.py"]),
        ("train", "genrec_core/recommender", ["genrec_core/recommender/trainer.py", "genrec_core/recommender/model.py"]),
        ("evaluate", "genrec_core/sequential", ["genrec_core/sequential/runner.py"]),  # imported inside a function
        ("preprocess", "genrec_core/data", ["genrec_core/data/sources/yelp.py"]),  # through the registry
    ],
)
def test_the_checker_fails_when_a_dep_is_removed(stage, dep, expected):
    missing = missing_code_deps(without(load_dvc_yaml(), stage, dep))
    assert set(missing) == {stage} and set(expected) <= set(missing[stage])


def test_data_deps_are_outputs_of_other_stages():
    assert dangling_data_deps(load_dvc_yaml()) == {}


def test_the_checker_fails_when_a_read_file_is_no_stage_output():
    dvc = without(load_dvc_yaml(), "preprocess", "reports/data_stats.md")
    assert dangling_data_deps(dvc) == {"analyse": ["reports/data_stats.md"]}


# --------------------------------------------------------------------------- outputs


def _tiny_dataset(folder: Path, users: int = 40, items: int = 24, length: int = 9) -> None:
    """A RecBole atomic file (no item text: the embed stage takes collaborative vectors)."""
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(users):
        for t in range(length):
            lines.append(f"u{u}\ti{(u * 5 + t * 7) % items}\t{u * 100 + t}")
    folder.mkdir(parents=True)
    (folder / "tiny.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")


TINY = [
    "data.dataset=atomic",
    "embed.source=collaborative",
    "embed.collaborative_dim=8",
    "embed.device=cpu",
    "tokenizer.levels=2",
    "tokenizer.codebook_size=8",
    "tokenizer.hidden_dims=[16]",
    "tokenizer.latent_dim=4",
    "tokenizer.epochs=2",
    "tokenizer.keep_last=2",
    "tokenizer.batch_size=0",
    "tokenizer.kmeans_iters=5",
    "tokenizer.device=cpu",
    "recommender.num_layers=1",
    "recommender.num_decoder_layers=1",
    "recommender.d_model=16",
    "recommender.d_ff=32",
    "recommender.num_heads=2",
    "recommender.d_kv=8",
    "recommender.epochs=2",
    "recommender.batch_size=64",
    "recommender.warmup_steps=1",
    "recommender.log_every=1",
    "recommender.eval_beam_size=10",
    "recommender.device=cpu",
    "evaluate.beam_size=10",
    "evaluate.ks=[1,5,10]",
]


def _snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    return {str(p.relative_to(root)): (s.st_ino, s.st_mtime_ns, s.st_size) for p in root.rglob("*") if p.is_file() and (s := p.stat())}


def tiny_project(tmp: Path) -> tuple[Path, list[str]]:
    """A project folder under ``tmp`` and the overrides that run it on the tiny raw dataset
    written beside it (``TINY`` sizes, raw and cache folders in ``tmp``)."""
    _tiny_dataset(tmp / "raw")
    root = tmp / "project"
    root.mkdir()
    return root, [*TINY, f"data.raw_dir={tmp / 'raw'}", f"data.cache_dir={tmp / 'cache'}"]


def run_stages_recording_writes(root: Path, names: list[str], overrides: list[str]) -> dict[str, set[str]]:
    """Run the dvc.yaml stages ``names`` in order, as their commands do, in project ``root`` with
    ``overrides``: {stage: files it wrote}. No stage may delete a file; torch's thread count is
    left as found."""
    import torch

    from genrec_core.cli import _run_stage

    stages = load_dvc_yaml()["stages"]
    written: dict[str, set[str]] = {}
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for name in names:
            cmd = stages[name]["cmd"]
            before = _snapshot(root)
            _run_stage(stage_module(cmd).stem, None, overrides, root, **stage_options(cmd))
            after = _snapshot(root)
            written[name] = {f for f, sig in after.items() if before.get(f) != sig}
            assert not set(before) - set(after), f"stage {name} deleted files"
    torch.set_num_threads(threads)  # as the other tests found it
    return written


@pytest.fixture(scope="module")
def pipeline_writes(tmp_path_factory) -> tuple[Path, dict[str, set[str]]]:
    """Run every dvc.yaml stage, as its command does, on a tiny dataset: (root, {stage: files written})."""
    root, overrides = tiny_project(tmp_path_factory.mktemp("pipeline"))
    return root, run_stages_recording_writes(root, list(load_dvc_yaml()["stages"]), overrides)


def test_every_file_a_stage_writes_is_a_declared_output(pipeline_writes):
    _, written = pipeline_writes
    assert all(written.values()), {k: v for k, v in written.items() if not v}
    assert undeclared_writes(load_dvc_yaml(), written) == {}


def test_every_declared_output_exists_after_the_run(pipeline_writes):
    root, _ = pipeline_writes
    dvc = load_dvc_yaml()
    missing = {name: [o for o in stage_outputs(stage) if not (root / o).exists()] for name, stage in dvc["stages"].items()}
    assert {k: v for k, v in missing.items() if v} == {}


def test_the_checker_fails_when_an_output_is_removed(pipeline_writes):
    _, written = pipeline_writes
    dvc = without(without(load_dvc_yaml(), "preprocess", "reports/data_stats.json"), "train", "data/recommender")
    gaps = undeclared_writes(dvc, written)
    assert set(gaps) == {"preprocess", "train"}
    assert gaps["preprocess"] == ["reports/data_stats.json"] and "data/recommender/best.pt" in gaps["train"]


# --------------------------------------------------------------------------- metrics


def _leaf_keys(obj, prefix: str = "") -> set[str]:
    if isinstance(obj, dict):
        return {k for key, value in obj.items() for k in _leaf_keys(value, f"{prefix}.{key}" if prefix else str(key))}
    return {prefix}


#: `dvc metrics show` prints a Path column, one column per distinct key and, over several
#: revisions, a Revision column: at most 25 in all.
MAX_METRIC_KEYS = 23


def test_metrics_are_only_what_experiments_are_compared_on():
    dvc = load_dvc_yaml()
    metrics = {name: entry_paths(stage.get("metrics")) for name, stage in dvc["stages"].items()}
    assert {k: v for k, v in metrics.items() if v} == {"train": ["reports/train/best_valid.json"], "evaluate": ["reports/metrics.json"]}


def test_dvc_metrics_show_stays_narrow_on_the_committed_reports():
    import json

    files = [REPO / p for stage in load_dvc_yaml()["stages"].values() for p in entry_paths(stage.get("metrics"))]
    if not all(f.exists() for f in files):
        pytest.skip("the committed reports are absent")
    keys = set().union(*(_leaf_keys(json.loads(f.read_text(encoding="utf-8"))) for f in files))
    assert len(keys) <= MAX_METRIC_KEYS, sorted(keys)


def test_the_train_stage_writes_its_comparable_metrics(pipeline_writes):
    import json

    root, _ = pipeline_writes
    best = json.loads((root / "reports" / "train" / "best_valid.json").read_text(encoding="utf-8"))
    summary = json.loads((root / "reports" / "train" / "summary.json").read_text(encoding="utf-8"))
    assert list(best) == ["best_epoch", *(f"best_valid_{m}@{k}" for k in (1, 5, 10) for m in ("hit", "ndcg")), "seconds"]
    assert best["best_valid_ndcg@10"] == summary["best_valid_ndcg@10"] and best["best_epoch"] == summary["best_epoch"]
    assert best["seconds"] == summary["seconds"]
