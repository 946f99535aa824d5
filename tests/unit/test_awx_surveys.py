"""The AWX job templates of extensions/awx and their surveys match what the
playbooks really take.

Each job template names a playbook and a survey (JSON, the survey_spec AWX
stores). The test reads the playbook, finds the role entry points it runs
(`roles:` and `include_role`/`import_role` with `tasks_from`, in plays and
blocks), and checks every survey question against those entry points'
argument specs: the variable exists, its survey type fits the option's type,
choices are allowed values, `required` matches, defaults agree; a question
may also set a playbook-level variable the playbook reads with a default.
Facts the pipeline sets must never be asked (an extra variable would
override them)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

TOP = Path(__file__).resolve().parents[2]
AWX = TOP / "extensions" / "awx"
TEMPLATES = sorted((AWX / "job_templates").glob("*.yml"))
SURVEY_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}
# Argument-spec type -> survey types that give the role a valid value.
COMPATIBLE = {
    "str": {"text", "textarea", "password", "multiplechoice"},
    "path": {"text"},
    "int": {"integer"},
    "float": {"float", "integer"},
    "list": {"multiselect"},
    "bool": {"multiplechoice"},
}
ROLE_KEYS = ("ansible.builtin.include_role", "ansible.builtin.import_role", "include_role", "import_role")
TASK_LISTS = ("pre_tasks", "tasks", "post_tasks", "handlers", "block", "rescue", "always")


def _role_dir(name: str) -> Path:
    return TOP / "roles" / name.rsplit(".", 1)[-1]


def _tasks(items: list[dict[str, Any]] | None) -> Iterator[dict[str, Any]]:
    for task in items or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from _tasks(task.get(key))


IMPORT_KEYS = ("ansible.builtin.import_playbook", "import_playbook")


def playbooks(playbook: Path) -> list[Path]:
    """The playbook and, in order, the playbooks it imports (recursively)."""
    found = [playbook]
    for play in yaml.safe_load(playbook.read_text()):
        for key in IMPORT_KEYS:
            if key in play:
                found += playbooks(playbook.parent / play[key])
    return found


def entry_points(playbook: Path) -> list[tuple[str, str]]:
    """(role, entry point) pairs the playbook (and what it imports) runs."""
    found = []
    for play in (p for path in playbooks(playbook) for p in yaml.safe_load(path.read_text())):
        for role in play.get("roles") or []:
            found.append((role["role"] if isinstance(role, dict) else role, "main"))
        for key in ("pre_tasks", "tasks", "post_tasks", "handlers"):
            for task in _tasks(play.get(key)):
                for action in ROLE_KEYS:
                    if action in task:
                        args = task[action]
                        found.append((args["name"], Path(args.get("tasks_from", "main")).stem))
    return _with_nested_roles(found)


def _with_nested_roles(found: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Adds the entry points of other roles that the roles' tasks include
    (the rollout role runs the upgrade role's main for upgrade.yml)."""
    seen = list(found)
    todo = list(found)
    while todo:
        role, entry = todo.pop()
        for tasks_file in _reachable_task_files(role, entry):
            for task in _tasks(yaml.safe_load(tasks_file.read_text())):
                for action in ROLE_KEYS:
                    if action in task and isinstance(task[action], dict):
                        args = task[action]
                        pair = (args["name"], Path(args.get("tasks_from", "main")).stem)
                        if pair not in seen:
                            seen.append(pair)
                            todo.append(pair)
    return seen


def _reachable_task_files(role: str, entry: str) -> list[Path]:
    """The tasks file of a role's entry point and the ones it includes or imports."""
    tasks_dir = _role_dir(role) / "tasks"
    files, todo = [], [tasks_dir / (entry + ".yml")]
    while todo:
        path = todo.pop()
        if path in files or not path.is_file():
            continue
        files.append(path)
        for task in _tasks(yaml.safe_load(path.read_text())):
            for action in ("ansible.builtin.include_tasks", "ansible.builtin.import_tasks",
                           "include_tasks", "import_tasks"):
                target = task.get(action)
                if isinstance(target, dict):
                    target = target.get("file")
                if isinstance(target, str) and "{{" not in target:
                    todo.append(tasks_dir / target)
    return files


def options_of(playbook: Path) -> dict[str, list[dict[str, Any]]]:
    """Variable -> the option specs of every entry point that takes it."""
    options: dict[str, list[dict[str, Any]]] = {}
    for role, entry in entry_points(playbook):
        specs = yaml.safe_load((_role_dir(role) / "meta/argument_specs.yml").read_text())["argument_specs"]
        if entry not in specs:
            continue  # a tasks file that is not an entry point (an internal include)
        for name, option in (specs[entry].get("options") or {}).items():
            options.setdefault(name, []).append(option)
    return options


def facts_set_by(playbook: Path) -> set[str]:
    """Variables set_fact/register sets in the roles the playbook runs."""
    facts = set()
    for role in {role for role, _entry in entry_points(playbook)}:
        for tasks_file in (_role_dir(role) / "tasks").glob("*.yml"):
            for task in _tasks(yaml.safe_load(tasks_file.read_text())):
                for action in ("ansible.builtin.set_fact", "set_fact"):
                    if isinstance(task.get(action), dict):
                        facts |= {k for k in task[action] if not k.startswith("__")}
    return facts


def _template(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _survey(template: dict[str, Any]) -> dict[str, Any]:
    return json.loads((AWX / "surveys" / template["survey"]).read_text())


def test_every_job_template_names_a_playbook_and_a_survey_that_exist() -> None:
    assert TEMPLATES, "no job template found: the checks below would prove nothing"
    for path in TEMPLATES:
        template = _template(path)
        assert (TOP / template["playbook"]).is_file(), template["playbook"]
        assert (AWX / "surveys" / template["survey"]).is_file(), template["survey"]


@pytest.mark.parametrize("path", TEMPLATES, ids=[p.stem for p in TEMPLATES])
def test_survey_matches_the_argument_specs(path: Path) -> None:
    template = _template(path)
    playbook = TOP / template["playbook"]
    survey = _survey(template)
    assert survey["name"] and survey["description"] is not None
    questions = survey["spec"]
    assert questions, "an empty survey"
    variables = [q["variable"] for q in questions]
    assert len(variables) == len(set(variables)), "a variable asked twice"

    options = options_of(playbook)
    facts = facts_set_by(playbook)
    playbook_text = "\n".join(path.read_text() for path in playbooks(playbook))
    for question in questions:
        name, kind = question["variable"], question["type"]
        where = f"{path.stem}: {name}"
        assert question["question_name"], where
        assert kind in SURVEY_TYPES, where
        assert isinstance(question["required"], bool), where
        assert name not in facts, f"{where} is a fact the run sets; an extra variable would override it"
        if kind in ("multiplechoice", "multiselect"):
            assert isinstance(question["choices"], list) and question["choices"], where
        if name not in options:
            # A playbook-level variable: read by the playbook, with a default
            # the survey's default agrees with.
            match = re.search(rf"\[?'?{name}'?\]?\s*\|\s*default\(('?)([^')]*)\1\)", playbook_text)
            assert match, f"{where} is neither a role option of {template['playbook']} nor read by it"
            assert str(question.get("default", "")) in ("", match.group(2)), where
            assert not question["required"], where
            continue
        for option in options[name]:
            option_type = option.get("type", "str")
            assert kind in COMPATIBLE[option_type], f"{where}: survey {kind} for a {option_type} option"
            if option_type == "list":
                assert option.get("elements", "str") == "str", where
            if option_type == "bool":
                assert sorted(question["choices"]) == ["false", "true"], where
            if option.get("no_log"):
                assert kind == "password", f"{where}: secret options are asked as password"
            if option.get("choices"):
                assert set(question["choices"]) <= {str(c) for c in option["choices"]}, where
            assert question["required"] == bool(option.get("required", False)), f"{where}: required"
            default = question.get("default", "")
            spec_default = option.get("default")
            if default in ("", None) or spec_default is None:
                # Blank answers to optional questions are not sent: the role's default applies.
                assert default in ("", None) or not question["required"], where
                continue
            if option_type == "list":
                assert default.split("\n") == [str(v) for v in spec_default], where
            elif isinstance(spec_default, str) and ("{{" in spec_default or "$" in spec_default):
                pass  # computed at run time; any explicit survey default is the user's choice
            else:
                assert default == spec_default, f"{where}: survey default {default!r} != {spec_default!r}"


@pytest.mark.parametrize("path", sorted((AWX / "credential_types").glob("*.yml")), ids=lambda p: p.stem)
def test_credential_types_inject_what_the_collection_reads(path: Path) -> None:
    """Every variable a credential type injects is one a module falls back to
    or the roles read (defaulted in the common role); every input is used."""
    cred = yaml.safe_load(path.read_text())
    assert cred["name"] and cred["kind"] in ("cloud", "net")
    fields = {f["id"]: f for f in cred["inputs"]["fields"]}
    assert set(cred["inputs"]["required"]) <= set(fields)
    for field in ("password", "pull_secret", "signing_key"):
        if field in fields:
            assert fields[field].get("secret") is True, field
    args = (TOP / "plugins/module_utils/_registry_args.py").read_text()
    roles = (TOP / "roles/build/tasks/podman_certs.yml").read_text() + (TOP / "roles/common/defaults/main.yml").read_text()
    for variable in cred["injectors"]["env"]:
        if "REGISTRY" in variable:
            assert f'"{variable}"' in args, f"{variable} is not an option fallback of the registry modules"
        assert f"'{variable}'" in roles, f"{variable} is not read by the roles"
    # Files: each is named and its path is injected.
    for name in cred["injectors"].get("file", {}):
        key = name.split(".", 1)[1]
        assert any(f"tower.filename.{key}" in v for v in cred["injectors"]["env"].values()), name
    templates = json.dumps(cred["injectors"])
    for field in fields:
        assert "{{ " + field + " }}" in templates, f"input {field} is injected nowhere"
