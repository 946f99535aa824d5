#!/usr/bin/env bash
# Installs everything the lab and the tests need on a fresh Debian machine:
# Debian packages from bindep.txt (apt-get), a pinned Python venv in .venv,
# and the .build/collections tree that makes this checkout importable as
# ansible_collections.ocp.kmod_layering. Safe to rerun; fast when done.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
if ! cmp -s tests/requirements.txt .venv/.requirements.txt; then
  .venv/bin/pip install --disable-pip-version-check -q -r tests/requirements.txt
  cp tests/requirements.txt .venv/.requirements.txt
fi

# Debian packages: bindep lists what is missing for our profiles.
missing=$(.venv/bin/bindep -b -f bindep.txt lab test || true)
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages: $missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # shellcheck disable=SC2086
  apt-get install -y -q $missing
fi

# The collection as Ansible and Python see it.
mkdir -p .build/collections/ansible_collections/ocp
ln -sfn "$top" .build/collections/ansible_collections/ocp/kmod_layering
echo "setup: ready (.venv, .build/collections)"
