"""The user docs stay in step with the code.

- docs/variables.md is generated from the roles' argument specs
  (`python tests/unit/test_docs.py` rewrites it): every variable of every
  role entry point is in it, with its type and default.
- The README links the user guide and the AWX guide, and every relative link
  of docs/*.md points at a file of the repository.
- Failure messages quoted in the troubleshooting section are the roles' and
  modules' own (each quoted fragment is found in the source).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

TOP = Path(__file__).resolve().parents[2]
DOCS = TOP / "docs"
VARIABLES = DOCS / "variables.md"
ROLES = ("plan", "resolve", "build", "publish", "rollout", "verify")
HEADER = """# Variable reference

Generated from `roles/*/meta/argument_specs.yml` by
`python tests/unit/test_docs.py` (the test fails when it is out of date).
`ansible-doc -t role ocp.kmod_layering.<role>` shows the same, with every
detail. Set fleet-wide variables in `group_vars/all`, per-cluster ones in
`host_vars/<cluster>` (see the [user guide](user-guide.md#inventory)).
Facts the roles set for the next ones (`kmod_sources` from plan,
`kmod_resolved`, `kmod_build`, `kmod_image` from publish) are listed where a
role reads them. Variables several roles read are defaulted once, in the role
`ocp.kmod_layering.common` (`roles/common/defaults/main.yml`), and listed under
each role that reads them.
"""


def _text(value: Any) -> str:
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    text = re.sub(r"[CIOVE]\(([^)]*)\)", r"`\1`", str(value))
    text = re.sub(r"M\(([^)]*)\)", r"`\1`", text)
    return text.replace("|", "\\|").replace("\n", " ")


def _default(option: dict[str, Any]) -> str:
    if "default" not in option:
        return "*required*" if option.get("required") else ""
    default = option["default"]
    if default == "":
        return '`""`'
    return "`" + (yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()) + "`"


def render() -> str:
    out = [HEADER]
    for role in ROLES:
        specs = yaml.safe_load((TOP / "roles" / role / "meta/argument_specs.yml").read_text())["argument_specs"]
        for entry, spec in specs.items():
            title = f"ocp.kmod_layering.{role}" + ("" if entry == "main" else f" (entry point `{entry}`)")
            out.append(f"\n## {title}\n\n{_text(spec.get('short_description', ''))}\n")
            out.append("| variable | type | default | description |\n|---|---|---|---|")
            for name, option in (spec.get("options") or {}).items():
                kind = option.get("type", "str")
                if kind == "list" and option.get("elements"):
                    kind = f"list of {option['elements']}"
                if option.get("choices"):
                    kind += " (" + ", ".join(str(c) for c in option["choices"]) + ")"
                out.append(f"| `{name}` | {kind} | {_default(option)} | {_text(option.get('description', ''))} |")
    return "\n".join(out) + "\n"


def test_variable_reference_is_generated_from_the_argument_specs() -> None:
    assert VARIABLES.read_text() == render(), "docs/variables.md is stale: run python tests/unit/test_docs.py"


def test_every_argument_spec_variable_is_in_the_reference() -> None:
    reference = VARIABLES.read_text()
    for role in ROLES:
        specs = yaml.safe_load((TOP / "roles" / role / "meta/argument_specs.yml").read_text())["argument_specs"]
        for spec in specs.values():
            for name in spec.get("options") or {}:
                assert f"| `{name}` |" in reference, f"{role}: {name} missing from docs/variables.md"


def test_readme_links_the_guides_and_doc_links_resolve() -> None:
    readme = (TOP / "README.md").read_text()
    for target in ("docs/user-guide.md", "docs/awx.md", "docs/variables.md"):
        assert f"]({target}" in readme, f"README.md does not link {target}"
    for page in DOCS.glob("*.md"):
        for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if re.match(r"[a-z]+:", link):
                continue
            assert (page.parent / link).resolve().exists(), f"{page.name}: broken link {link}"


def test_troubleshooting_quotes_real_messages() -> None:
    """Every `> ...` quote of the troubleshooting section is (up to the
    placeholders in <angle brackets>) text of a role or module."""
    guide = (DOCS / "user-guide.md").read_text()
    section = guide.split("## Troubleshooting", 1)[1]
    quotes = [q.strip() for q in re.findall(r"^> (.+)$", section, re.M)]
    assert len(quotes) >= 8
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


if __name__ == "__main__":
    VARIABLES.write_text(render())
    sys.exit(0)
