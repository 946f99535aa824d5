"""Writes docs/variables.md, the variable reference, from the roles'
argument specs (roles/*/meta/argument_specs.yml): `python hack/variables_doc.py`.
tests/unit/test_docs.py checks the result against the specs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

TOP = Path(__file__).resolve().parents[1]
DOCS = TOP / "docs"
VARIABLES = DOCS / "variables.md"
# The pipeline's order first, then any other role by name.
PIPELINE = ("plan", "resolve", "build", "publish", "rollout", "verify", "upgrade")
HEADER = """# Variable reference

Generated from `roles/*/meta/argument_specs.yml` by
`python hack/variables_doc.py` (tests/unit/test_docs.py fails when a
variable is missing, stale or shows another type or default).
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


def roles() -> list[str]:
    found = sorted(p.parts[-3] for p in TOP.glob("roles/*/meta/argument_specs.yml"))
    return [r for r in PIPELINE if r in found] + [r for r in found if r not in PIPELINE]


def render() -> str:
    out = [HEADER]
    for role in roles():
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


if __name__ == "__main__":
    VARIABLES.write_text(render())
