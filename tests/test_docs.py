"""The documentation holds: the params reference is the generator's output, every relative link
resolves, and the README stays short."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from genrec_core.params_doc import REGENERATE, field_comments, render_params_reference, yaml_comments

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 200

#: [text](target) and [text]: target (reference definitions); images too.
_INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFDEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def heading_anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the Markdown headings of ``path`` (lower case, punctuation but
    ``-`` and ``_`` dropped, spaces to hyphens; a repeated heading gets ``-1``, ``-2``, ...)."""
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", _FENCE.sub("", path.read_text(encoding="utf-8")), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


def broken_links(path: Path) -> list[str]:
    """Relative link targets in Markdown file ``path`` that name no existing file or folder, or
    no heading of the Markdown file they point into (fenced code and code spans are not links;
    URLs are not checked)."""
    text = _CODE_SPAN.sub("", _FENCE.sub("", path.read_text(encoding="utf-8")))
    bad = []
    for target in _INLINE.findall(text) + _REFDEF.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue
        rel, _, anchor = target.partition("#")
        rel = rel.split("?", 1)[0]
        dest = path.parent / rel if rel else path
        if not dest.exists():
            bad.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in heading_anchors(dest):
            bad.append(target)
    return bad


def test_params_reference_is_the_generated_text():
    committed = (ROOT / "docs" / "params.md").read_text(encoding="utf-8")
    assert committed == render_params_reference(ROOT / "params.yaml"), (
        f"docs/params.md is out of date with genrec_core/config.py or params.yaml; regenerate it: {REGENERATE}"
    )


def test_every_relative_link_in_the_docs_resolves():
    bad = {str(p.relative_to(ROOT)): links for p in doc_files() if (links := broken_links(p))}
    assert bad == {}, f"links to missing files or headings: {bad}"


def test_the_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/ (at most {README_MAX_LINES})"


def decimals_not_in_reports(text: str) -> list[str]:
    """Decimal numbers of ``text`` (``0.1368``, ``.0697``, ``7.5``) that occur in no file under
    reports/ (written there as ``0.1368`` or ``.1368``)."""
    corpus = "\n".join(
        p.read_text(encoding="utf-8", errors="replace") for p in (ROOT / "reports").rglob("*") if p.is_file() and p.suffix in (".md", ".json", ".csv")
    )
    missing = []
    text = re.sub(r"Python >= \d+\.\d+", "", _FENCE.sub("", text))  # a version requirement is no figure
    for number in re.findall(r"(?<![\w.])\d*\.\d+", text):
        short = number[1:] if number.startswith("0.") else number
        if number not in corpus and short not in corpus:
            missing.append(number)
    return missing


def test_the_results_page_and_the_readme_quote_only_figures_found_in_reports():
    for page in (ROOT / "docs" / "results.md", ROOT / "README.md"):
        assert decimals_not_in_reports(page.read_text(encoding="utf-8")) == [], f"{page.name} quotes figures no report holds"


def test_the_figure_check_finds_a_figure_no_report_holds():
    assert decimals_not_in_reports("test N@10 0.0697 and .1368, but 0.98765 nowhere") == ["0.98765"]
    assert decimals_not_in_reports("Python >= 3.10, but 3.1099 nowhere") == ["3.1099"]


def test_the_docs_pages_exist_and_the_index_links_each_one():
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md") if p.name != "index.md")
    assert {
        "pipeline.md",
        "params.md",
        "datasets.md",
        "models-methods-losses.md",
        "serving.md",
        "distributed.md",
        "extending.md",
        "results.md",
        "spec.md",
    } <= set(pages)
    assert [p for p in pages if f"({p})" not in index] == []


# --------------------------------------------------------------------------- the link checker itself


def test_the_link_checker_finds_a_broken_link_and_ignores_code_and_urls(tmp_path):
    (tmp_path / "there.md").write_text("# Part 1: the `x` (y)\n## Part 1: the `x` (y)\n```\n# not a heading\n```\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Top\n[ok](there.md) [ok too](there.md#part-1-the-x-y) [again](there.md#part-1-the-x-y-1) "
        "[web](https://example.org/x.md) [anchor](#top)\n"
        "[gone](missing.md) ![img](pics/none.png) [no such heading](there.md#not-a-heading) [here](#nowhere)\n"
        "`[not a link](nowhere.md)`\n"
        "```\n[in a fence](fenced.md)\n```\n"
        "[ref]: also-missing.md\n",
        encoding="utf-8",
    )
    assert broken_links(page) == ["missing.md", "pics/none.png", "there.md#not-a-heading", "#nowhere", "also-missing.md"]


# --------------------------------------------------------------------------- the generator


def test_yaml_comments_keys_nesting_continuations_and_quoted_hashes():
    text = (
        "# header, not a key's help\n"
        "seed: 1   # top\n"
        "sec:      # the section\n"
        "  a: 2    # first line\n"
        "          #   second line\n"
        "  b: '#not a comment'  # real one\n"
        "  sub:\n"
        "    c: [1, 2]  # deep\n"
        "  d: 3\n"
        "\n"
        "          # after a blank line: attached to nothing\n"
    )
    assert yaml_comments(text) == {
        "seed": "top",
        "sec": "the section",
        "sec.a": "first line second line",
        "sec.b": "real one",
        "sec.sub.c": "deep",
    }


@dataclass
class _Inner:
    """Inner section."""

    depth: int = 3  # how deep


@dataclass
class _Section:
    """A toy section."""

    name: str | None = None  # a name, or none
    # above the field
    sizes: list[int] = field(default_factory=lambda: [4, 8])
    extra: dict[str, Any] = field(default_factory=dict)
    inner: _Inner = field(default_factory=_Inner)


@dataclass
class _Schema:
    seed: int = 7
    sec: _Section = field(default_factory=_Section)


def test_values_render_as_yaml_reads_them():
    from genrec_core.params_doc import format_value

    assert [format_value(v) for v in (None, True, 0.0002, "auto", [1, 5], {"a": None}, _Inner())] == [
        "`null`",
        "`true`",
        "`0.0002`",
        "`auto`",
        "`[1, 5]`",
        '`{"a": null}`',
        '`{"depth": 3}`',
    ]


def test_field_comments_inline_or_above():
    assert field_comments(_Section) == {"name": "a name, or none", "sizes": "above the field"}


def test_render_lists_every_field_with_type_default_yaml_value_and_help(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("sec:\n  sizes: [1]      # from yaml | wins\n  inner:\n    depth: 5\n", encoding="utf-8")
    page = render_params_reference(params, schema=_Schema)
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    assert rows == [
        "| `seed` | `int` | `7` | (not listed) |  |",
        "| `sec.name` | `str \\| None` | `null` | (not listed) | a name, or none |",
        "| `sec.sizes` | `list[int]` | `[4, 8]` | `[1]` | from yaml \\| wins |",
        "| `sec.extra` | `dict[str, Any]` | `{}` | (not listed) |  |",
        "| `sec.inner.depth` | `int` | `3` | `5` | how deep |",
    ]
    headings = [line for line in page.splitlines() if line.startswith("#")]
    assert headings == ["# Params reference", "## Top level", "## `sec`", "### `sec.inner`"]
    assert "A toy section." in page and "Inner section." in page


def test_the_registry_tables_list_only_the_library_s_own_classes():
    from genrec_core.methods import METHODS, Method

    class Stray(Method):  # a test's toy registered in the shared table (as tests/test_methods.py does)
        param_defaults: ClassVar[dict[str, Any]] = {"knob": 1}

    METHODS["stray-doc-test"] = Stray
    try:
        page = render_params_reference(ROOT / "params.yaml")
    finally:
        del METHODS["stray-doc-test"]
    assert "stray-doc-test" not in page
    assert "- `mtgrec` (genrec_core.methods.mtgrec." in page and "`tau` = `1.0`" in page
