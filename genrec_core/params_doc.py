"""The params reference (docs/params.md), generated from the params schema so it cannot drift.

Sources, in order of precedence for a param's help text:

1. the inline comment of its line in ``params.yaml`` (plus the comment-only lines indented under
   it, which continue it): the richest help the project has;
2. the comment beside (or directly above) its field in the ``genrec_core.config`` dataclasses.

Every field of every dataclass under ``Params`` appears, with its type and its default in the
code, whether or not params.yaml lists it (then its params.yaml column says so). Nested dataclass
sections become sub-sections with dotted names. The dict params checked against a registry
(``recommender.loss_params``, ``recommender.method_params``) get one table per registered
built-in class, from its ``param_defaults``.

Regenerate: ``python -m genrec_core.params_doc > docs/params.md`` (tests/test_docs.py fails when
the committed page differs from this module's output).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import io
import json
import sys
import textwrap
import tokenize
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from genrec_core.config import Params

REGENERATE = "python -m genrec_core.params_doc > docs/params.md"
#: params.yaml of the repository this module belongs to (absent in an installed wheel).
DEFAULT_PARAMS_YAML = Path(__file__).resolve().parents[1] / "params.yaml"

_MISSING = object()


# --------------------------------------------------------------------------- params.yaml comments


def _split_comment(line: str) -> tuple[str, str | None]:
    """``(code, comment)`` of one YAML line; a ``#`` inside quotes is not a comment."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i], line[i + 1 :].strip()
    return line, None


def yaml_comments(text: str) -> dict[str, str]:
    """``{dotted key: comment}`` from a YAML mapping's inline comments.

    A comment-only line indented deeper than the key above it continues that key's comment (how
    params.yaml wraps long help); other comment-only lines (headers) are ignored. Keys are
    tracked by indentation, so nested sections give dotted names (``tokenizer.rqvae.beta``).
    """
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    last: tuple[int, str] | None = None  # (indent, dotted key) of the latest key line
    for raw in text.splitlines():
        code, comment = _split_comment(raw)
        if not code.strip():
            indent = len(raw) - len(raw.lstrip())
            if comment is not None and last is not None and indent > last[0]:
                out[last[1]] = f"{out.get(last[1], '')} {comment}".strip()
            else:  # a blank line or a header comment ends the key's help
                last = None
            continue
        indent = len(code) - len(code.lstrip())
        stripped = code.strip()
        if stripped.startswith("- ") or ":" not in stripped:  # list items, flow continuations
            continue
        key = stripped.split(":", 1)[0].strip().strip("'\"")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([k for _, k in stack] + [key])
        stack.append((indent, key))
        last = (indent, dotted)
        if comment:
            out[dotted] = comment
    return out


def _lookup(tree: Any, dotted: str) -> Any:
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


# --------------------------------------------------------------------------- dataclass comments


def field_comments(cls: type) -> dict[str, str]:
    """``{field: comment}`` from a dataclass's source: the comment on the field's line(s), else
    the comment-only lines directly above it."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    out: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        inline = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
        above: list[str] = []
        n = node.lineno - 1
        while n >= 1 and n in comments and lines[n - 1].lstrip().startswith("#"):
            above.insert(0, comments[n])
            n -= 1
        text = " ".join(inline) or " ".join(above)
        if text:
            out[node.target.id] = text
    return out


# --------------------------------------------------------------------------- formatting


def format_type(tp: Any) -> str:
    """A type hint as the reader writes it: ``int | str``, ``list[int]``, ``dict[str, Any]``."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        return " | ".join("None" if a is type(None) else format_type(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(format_type(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]" if args else getattr(origin, "__name__", str(origin))
    if tp is Any:
        return "Any"
    return getattr(tp, "__name__", str(tp))


def format_value(value: Any) -> str:
    """A value as YAML would read it back: null, true, 0.001, [1, 5], {}, bare strings."""
    if value is _MISSING:
        return "(not listed)"
    if value is None:
        return "`null`"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (list, tuple, dict)):
        return f"`{json.dumps(value, ensure_ascii=False)}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    """Table-cell safe: pipes escaped, angle brackets kept visible (``<name>`` is not HTML)."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return _MISSING


# --------------------------------------------------------------------------- registries


def _builtin(table: dict[str, type]) -> dict[str, type]:
    """Only the classes the library itself registers (tests register toys in the same table)."""
    return {name: cls for name, cls in sorted(table.items()) if cls.__module__.startswith("genrec_core.")}


def _losses() -> dict[str, type]:
    from genrec_core.recommender.losses import LOSSES

    return _builtin(LOSSES)


def _methods() -> dict[str, type]:
    from genrec_core import methods

    for module in methods.BUILTIN_METHOD_MODULES:
        importlib.import_module(f"genrec_core.methods.{module}")
    return _builtin(methods.METHODS)


#: Dict params whose keys a registry defines: dotted name -> (param naming the class, classes).
REGISTRY_DICTS: dict[str, tuple[str, Callable[[], dict[str, type]]]] = {
    "recommender.loss_params": ("recommender.loss", _losses),
    "recommender.method_params": ("recommender.method", _methods),
}


def _registry_tables(dotted: str) -> list[str]:
    selector, classes = REGISTRY_DICTS[dotted]
    out = [f"#### `{dotted}`, by `{selector}`", ""]
    for name, cls in classes().items():
        doc = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
        out.append(f"- `{name}` ({cls.__module__}.{cls.__qualname__}): {doc}".rstrip(": "))
        defaults = getattr(cls, "param_defaults", {}) or {}
        if defaults:
            out.append("  " + ", ".join(f"`{k}` = {format_value(v)}" for k, v in defaults.items()))
        else:
            out.append("  (no params)")
    out.append("")
    return out


# --------------------------------------------------------------------------- the page


def _row(dotted: str, tp: Any, f: dataclasses.Field, yaml_tree: Any, help_text: str) -> str:
    return (
        f"| `{dotted}` | `{_cell(format_type(tp))}` | {_cell(format_value(_default(f)))} | "
        f"{_cell(format_value(_lookup(yaml_tree, dotted)))} | {_cell(help_text)} |"
    )


TABLE_HEAD = ["| param | type | default (code) | params.yaml | what it does |", "|---|---|---|---|---|"]


def _section(cls: type, prefix: str, yaml_tree: Any, yaml_help: dict[str, str], level: int) -> list[str]:
    """The rows of ``cls``'s own fields, then one sub-section per nested dataclass field.
    At the top (``prefix`` empty) the scalar fields form a "Top level" section."""
    hints = typing.get_type_hints(cls)
    code_help = field_comments(cls)
    rows: list[str] = []
    nested: list[tuple[type, str]] = []
    after: list[str] = []
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints.get(f.name, Any)
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            nested.append((tp, dotted))
            continue
        rows.append(_row(dotted, tp, f, yaml_tree, yaml_help.get(dotted) or code_help.get(f.name, "")))
        if dotted in REGISTRY_DICTS:
            after += _registry_tables(dotted)
    out: list[str] = []
    if prefix:
        out += [f"{'#' * level} `{prefix}`", ""]
        doc = inspect.getdoc(cls)
        if doc:
            out += [doc.split("\n\n")[0].replace("\n", " "), ""]
        if yaml_help.get(prefix):
            out += [f"params.yaml: {yaml_help[prefix]}", ""]
    elif rows:
        out += [f"{'#' * level} Top level", ""]
    if rows:
        out += [*TABLE_HEAD, *rows, ""]
    out += after
    for sub, dotted in nested:
        out += _section(sub, dotted, yaml_tree, yaml_help, min(6, level + (1 if prefix else 0)))
    return out


def render_params_reference(params_yaml: Path | None = DEFAULT_PARAMS_YAML, schema: type = Params) -> str:
    """The Markdown text of docs/params.md: ``schema``'s fields (default: ``Params``) with the
    values and comments of ``params_yaml`` (None or a missing file: no params.yaml column values)."""
    yaml_tree: Any = {}
    yaml_help: dict[str, str] = {}
    if params_yaml is not None and Path(params_yaml).exists():
        text = Path(params_yaml).read_text(encoding="utf-8")
        yaml_tree = yaml.safe_load(text) or {}
        yaml_help = yaml_comments(text)
    out = [
        "# Params reference",
        "",
        f"<!-- Generated by genrec_core/params_doc.py; do not edit. Regenerate: {REGENERATE} -->",
        "",
        (
            "Every param of `params.yaml`, one table per section, generated from the schema "
            "(the dataclasses of `genrec_core/config.py`) and the comments of `params.yaml`. "
            "*default (code)* is what a param takes when params.yaml and `-S` leave it out; "
            "*params.yaml* is the committed value (the CPU default run), or *(not listed)*. "
            "Set one with `-S section.key=value` on any `genrec` command or `dvc exp run` "
            "(a key params.yaml does not list needs `dvc exp run -S +section.key=value`). "
            "Unknown keys and impossible values stop every command with the param's dotted name."
        ),
        "",
        f"Regenerate: `{REGENERATE}`.",
        "",
    ]
    out += _section(schema, "", yaml_tree, yaml_help, 2)
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the page (``python -m genrec_core.params_doc > docs/params.md``); an optional
    argument names another params.yaml."""
    argv = sys.argv[1:] if argv is None else argv
    sys.stdout.write(render_params_reference(Path(argv[0]) if argv else DEFAULT_PARAMS_YAML))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
