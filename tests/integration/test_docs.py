"""Checks of the README and docs/ that keep them true: relative links resolve (file and
heading), the imports in Python examples work, the README's settings table matches
`Settings` field for field and default for default, and the README holds no run log
(timestamps, "this round"). docs/history/ is a record of older code and is not checked
for imports."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted([README, *(ROOT / "docs").rglob("*.md")])

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^(```|~~~)")


def _prose(text: str) -> str:
    """The text outside fenced code blocks (a link in a code sample is not a link)."""
    out, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            out.append(line)
    return "\n".join(out)


def heading_slug(heading: str) -> str:
    """GitHub's anchor for a heading.

    >>> heading_slug("Persistence window: `everysec` vs `always`")
    'persistence-window-everysec-vs-always'
    >>> heading_slug("Grafana dashboard")
    'grafana-dashboard'
    """
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    headings = re.findall(r"^#{1,6} (.+)$", _prose(path.read_text()), flags=re.M)
    return {heading_slug(h) for h in headings}


def _relative_links(path: Path) -> list[str]:
    links = [a or b for a, b in _LINK.findall(_prose(path.read_text()))]
    return [link for link in links if not re.match(r"^[a-z]+:", link)]


def _broken_links(doc: Path) -> list[str]:
    broken = []
    for link in _relative_links(doc):
        target, _, fragment = link.partition("#")
        file = (doc.parent / target).resolve() if target else doc
        if not file.exists():
            broken.append(f"{link} (no such file)")
        elif fragment and file.suffix == ".md" and fragment not in _anchors(file):
            broken.append(f"{link} (no such heading)")
    return broken


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_existing_files_and_headings(doc: Path) -> None:
    broken = _broken_links(doc)
    assert not broken, f"{doc.relative_to(ROOT)}: broken links: {broken}"


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    doc = tmp_path / "a.md"
    doc.write_text(
        "# Title\n\n[ok](a.md#title) [gone](b.md) [bad](#nope) ![img](c.png)\n"
        "```\n[a code sample](x.md)\n```\n"
    )
    assert _broken_links(doc) == [
        "b.md (no such file)",
        "#nope (no such heading)",
        "c.png (no such file)",
    ]


def _python_imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of each `from M import a, b` / `import M` in the ```python blocks."""
    blocks = re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.M | re.S)
    found = []
    for line in "\n".join(blocks).splitlines():
        if m := re.match(r"from ([\w.]+) import ([\w, ]+)$", line.strip()):
            found.append((m[1], [n.strip() for n in m[2].split(",")]))
        elif m := re.match(r"import ([\w.]+)(?: as \w+)?$", line.strip()):
            found.append((m[1], []))
    return found


EXAMPLES = [p for p in DOCS if "history" not in p.parts and _python_imports(p)]


@pytest.mark.parametrize("doc", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_imports_of_python_examples_work(doc: Path) -> None:
    missing = []
    for module, names in _python_imports(doc):
        try:
            imported = importlib.import_module(module)
        except ImportError:
            missing.append(module)
            continue
        missing += [f"{module}.{n}" for n in names if not hasattr(imported, n)]
    assert not missing, f"{doc.relative_to(ROOT)}: examples import what does not exist: {missing}"


def _settings_table(doc: Path, heading: str) -> dict[str, str]:
    """The settings table under `heading` in `doc`: NAME -> the default cell, backticks removed."""
    section = doc.read_text().split(heading, 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = [n.strip().strip("`") for n in cells[0].split(" / ")]
        defaults = [d.strip().strip("`") for d in cells[1].split(" / ")]
        assert len(names) == len(defaults), line
        for name, default in zip(names, defaults, strict=True):
            assert name not in rows, f"{name} appears twice in {doc.name}'s settings table"
            rows[name] = default
    return rows


def _same(shown: str, actual: Any) -> bool:
    if shown == "unset":
        return actual in (None, [], {})
    if isinstance(actual, list) and not shown.startswith("["):
        return [part.strip() for part in shown.split(",")] == actual
    try:
        value = json.loads(shown)
    except ValueError:
        return shown == str(actual)
    if isinstance(actual, (int, float)) and not isinstance(actual, bool):
        return isinstance(value, (int, float)) and float(value) == float(actual)
    return bool(value == actual)


def _wrong_defaults(table: dict[str, str], fields: dict[str, Any]) -> dict[str, Any]:
    return {
        name: (shown, fields[name].default)
        for name, shown in table.items()
        if name in fields and not _same(shown, fields[name].default)
    }


def test_the_configuration_reference_lists_every_setting_with_its_default() -> None:
    table = _settings_table(ROOT / "docs" / "configuration.md", "# Configuration reference")
    fields = {name.upper(): info for name, info in Settings.model_fields.items()}
    assert sorted(table) == sorted(fields), (
        f"missing from docs/configuration.md: {sorted(set(fields) - set(table))}; "
        f"not settings: {sorted(set(table) - set(fields))}"
    )
    wrong = _wrong_defaults(table, fields)
    assert not wrong, f"docs/configuration.md defaults that differ from the code: {wrong}"


def test_the_readme_settings_are_real_settings_with_their_defaults() -> None:
    table = _settings_table(README, "## Configuration")
    fields = {name.upper(): info for name, info in Settings.model_fields.items()}
    assert len(table) >= 10, "the README shows the common settings"
    assert set(table) <= set(fields), f"not settings: {sorted(set(table) - set(fields))}"
    wrong = _wrong_defaults(table, fields)
    assert not wrong, f"README defaults that differ from service/settings.py: {wrong}"


def test_the_default_comparison_can_fail() -> None:
    assert _same("604800", 604_800) and not _same("86400", 604_800)
    assert _same("legit,fraud", ["legit", "fraud"]) and not _same("legit", ["legit", "fraud"])
    assert _same("unset", None) and not _same("unset", 5)
    assert _same("false", False) and not _same("true", False)


def test_the_readme_is_a_manual_not_a_run_log() -> None:
    text = README.read_text()
    diary = re.findall(r"[0-9]{2}:[0-9]{2} UTC|this round|[Ee]arlier rounds|the last stop", text)
    assert not diary, f"run-log wording belongs in docs/history/: {diary}"
    assert len(text.splitlines()) <= 400, "the README is a short manual (at most ~400 lines)"
