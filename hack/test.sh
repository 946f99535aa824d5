#!/usr/bin/env bash
# Every test: ansible-test sanity, ansible-lint, then pytest (unit tests, and
# integration/e2e tests against the embedded lab, which the tests start once
# per run and stop at the end; tests/lab: the lab's own tests).
# Each stage's wall time, and the total, are printed at the end (also when a
# stage fails); pytest prints its 30 slowest tests itself (pytest.ini).
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
times=()
current=""
stage_started=0

stage() {
  finish_stage
  current=$1
  stage_started=$(date +%s)
  echo "== $current"
}

finish_stage() {
  if [ -n "$current" ]; then
    times+=("$(printf '%-26s %5d s' "$current" $(($(date +%s) - stage_started)))")
    current=""
  fi
}

report() {
  local rc=$?
  finish_stage
  echo "== wall time per stage"
  printf '  %s\n' "${times[@]}"
  printf '  %-26s %5d s (%s)\n' "total" $(($(date +%s) - started)) "$([ "$rc" = 0 ] && echo passed || echo "failed, rc=$rc")"
}
trap report EXIT

stage "ansible-test sanity"
hack/sanity.sh
stage "ansible-lint"
ansible-lint
stage "antsibull-changelog lint"
antsibull-changelog lint
stage "pytest"
pytest "$@"
