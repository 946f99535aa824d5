"""The user docs state facts that hold in the code.

- docs/variables.md (written by `python hack/variables_doc.py`) lists, for
  every entry point of every role, exactly the variables of its argument
  spec, each with the spec's type and default.
- Every relative link of the README, docs/*.md and the roles' READMEs points
  at a file of the repository (and at a heading of it, for #anchors), and
  every page of docs/ can be reached from the README by following links.
- Failure messages quoted in the troubleshooting section are the roles' and
  modules' own (each quoted fragment is found in the source).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

TOP = Path(__file__).resolve().parents[2]
DOCS = TOP / "docs"
VARIABLES = DOCS / "variables.md"
PAGES = sorted([TOP / "README.md", *DOCS.glob("*.md"), *TOP.glob("roles/*/README.md")])
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _specs() -> dict[tuple[str, str], dict[str, Any]]:
    """(role, entry point) -> options, from every role's argument spec."""
    found = {}
    for path in sorted(TOP.glob("roles/*/meta/argument_specs.yml")):
        role = path.parts[-3]
        for entry, spec in yaml.safe_load(path.read_text())["argument_specs"].items():
            found[(role, entry)] = spec.get("options") or {}
    return found


def _reference() -> dict[tuple[str, str], dict[str, tuple[str, str]]]:
    """(role, entry point) -> {variable: (type cell, default cell)}, as the
    reference shows them."""
    sections: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}
    rows: dict[str, tuple[str, str]] = {}
    for line in VARIABLES.read_text().splitlines():
        heading = re.match(r"## ocp\.kmod_layering\.(\w+)(?: \(entry point `(\w+)`\))?$", line)
        if heading:
            rows = sections.setdefault((heading.group(1), heading.group(2) or "main"), {})
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 4 and re.fullmatch(r"`\w+`", cells[0]):
            rows[cells[0].strip("`")] = (cells[1], cells[2])
    return sections


def _shown_default(cell: str) -> Any:
    assert cell.startswith("`") and cell.endswith("`"), cell
    return yaml.safe_load(cell[1:-1].replace("\\|", "|"))


def test_the_reference_shows_every_spec_variable_with_its_type_and_default() -> None:
    specs, reference = _specs(), _reference()
    assert set(reference) == set(specs), "role entry points missing from or stale in docs/variables.md"
    for where, options in specs.items():
        shown = reference[where]
        assert set(shown) == set(options), f"{where}: missing {set(options) - set(shown)}, stale {set(shown) - set(options)}"
        for name, option in options.items():
            kind, default = shown[name]
            assert kind.split(" (")[0] == option.get("type", "str") + (
                f" of {option['elements']}" if option.get("type") == "list" and option.get("elements") else ""
            ), f"{where} {name}: {kind}"
            for choice in option.get("choices") or []:
                assert str(choice) in kind, f"{where} {name}: choice {choice} not shown"
            if "default" in option:
                assert _shown_default(default) == option["default"], f"{where} {name}: default {default}"
            else:
                assert default == ("*required*" if option.get("required") else ""), f"{where} {name}: {default}"


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def _local_links(page: Path) -> list[tuple[Path, str]]:
    links = []
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for link in LINK.findall(text):
        if re.match(r"[a-z]+:", link):
            continue
        target, anchor = link.partition("#")[::2]
        links.append(((page.parent / target).resolve() if target else page, anchor))
    return links


def test_relative_links_resolve_to_files_and_headings() -> None:
    for page in PAGES:
        for target, anchor in _local_links(page):
            where = f"{page.relative_to(TOP)}: {target.name}#{anchor}"
            assert target.exists(), f"broken link in {where}"
            if anchor and target.suffix == ".md":
                assert anchor in _anchors(target), f"no heading for the anchor in {where}"


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    seen, todo = set(), [(TOP / "README.md").resolve()]
    while todo:
        page = todo.pop()
        if page in seen or page.suffix != ".md" or not page.exists():
            continue
        seen.add(page)
        todo.extend(link[0] for link in _local_links(page))
    orphans = sorted(p.name for p in DOCS.glob("*.md") if p.resolve() not in seen)
    assert orphans == [], f"docs pages no link from README.md leads to: {orphans}"


def test_troubleshooting_quotes_real_messages() -> None:
    """Every `> ...` quote of the troubleshooting section is (up to the
    placeholders in <angle brackets>) text of a role or module."""
    guide = (DOCS / "user-guide.md").read_text()
    section = guide.split("## Troubleshooting", 1)[1]
    quotes = [q.strip() for q in re.findall(r"^> (.+)$", section, re.M)]
    assert quotes, "no quoted message found: the check would prove nothing"
    texts = []
    for pattern in ("roles/*/tasks/*.yml", "roles/*/files/*", "plugins/modules/*.py", "plugins/module_utils/*.py"):
        for path in TOP.glob(pattern):
            text = re.sub(r"\s+", " ", path.read_text())
            if path.suffix == ".py":
                text = re.sub(r'"\s*"', "", text)  # adjacent string literals
            elif path.suffix == ".sh":
                text = re.sub(r'"\s*\\\s*"', " ", text)  # echo arguments continued on the next line
            texts.append(text)
    source = " ".join(texts)
    for quote in quotes:
        fragments = [f.strip() for f in re.split(r"<[^>]+>|\.\.\.", quote) if len(f.strip()) >= 12]
        assert fragments, quote
        for fragment in fragments:
            assert fragment in source, f"not in the roles or modules: {fragment!r}"
