#!/usr/bin/env bash
# Every test: ansible-test sanity, ansible-lint, then pytest (unit tests, and
# integration/e2e tests against the embedded lab, which the tests start once
# per run and stop at the end; tests/lab: the lab's own tests).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== ansible-test sanity"
hack/sanity.sh
echo "== ansible-lint"
ansible-lint
echo "== antsibull-changelog lint"
antsibull-changelog lint
echo "== pytest"
pytest "$@"
