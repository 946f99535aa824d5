# shellcheck shell=bash
# Source this for an interactive shell with the project's environment.
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$top/.venv/bin:$PATH"
export PYTHONPATH="$top/.build/collections:$top/tests"
export ANSIBLE_COLLECTIONS_PATH="$top/.build/collections"
export ANSIBLE_CONFIG="$top/ansible.cfg"
