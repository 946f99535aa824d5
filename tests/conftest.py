"""Shared pytest setup: the embedded lab's fixtures (`lab`, `lab_registry`,
`registry_client_args`) come from kmodlab.pytest_plugin."""

pytest_plugins = ["kmodlab.pytest_plugin"]
