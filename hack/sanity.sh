#!/usr/bin/env bash
# ansible-test needs the collection at ansible_collections/<ns>/<name>; run it
# on a copy of the files git would ship (tracked + untracked, not ignored).
# ansible-test's own pinned requirements live in a venv of their own
# (.build/sanity-venv), never mixed with the project's pins.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
venv=.build/sanity-venv
if [ ! -x "$venv/bin/ansible-test" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --disable-pip-version-check -q "$(grep '^ansible-core==' tests/requirements.txt)"
fi
# ansible-test bootstraps pip in the venvs it makes with a get-pip script it
# downloads from a host outside the package registries; hand it ours.
reqs=$(echo "$venv"/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py)
pipver=$(sed -n "s/^ *pip='\([0-9.]*\)',\$/\1/p" "$reqs" | head -1)
mkdir -p ~/.ansible/test/cache
cp hack/get_pip.py ~/.ansible/test/cache/"get_pip_${pipver//./_}.py"

# A fresh tree per run (parallel runs must not share one), with the
# collections our plugins import from (kubernetes.core) beside it.
root=$(mktemp -d "$top/.build/ansible-test.XXXXXX")
trap 'rm -rf "$root"' EXIT
dest=$root/ansible_collections/ocp/kmod_layering
mkdir -p "$dest" "$root/ansible_collections/kubernetes"
cp -r "$top"/.venv/lib/python3*/site-packages/ansible_collections/kubernetes/core "$root/ansible_collections/kubernetes/core"
git ls-files -z --cached --others --exclude-standard \
  | tar --null --no-recursion -T - -cf - 2>/dev/null | tar -C "$dest" -xf -
cd "$dest"
git init -q . && git add -A
py=$("$top/$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PATH="$top/$venv/bin:$PATH" ansible-test sanity --requirements --python "$py" "$@"
