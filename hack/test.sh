#!/usr/bin/env bash
# Every test: ansible-test sanity, ansible-lint, antsibull-changelog lint and
# pytest (unit tests, and integration/e2e tests against the embedded lab,
# which the tests start once per run and stop at the end; tests/lab: the
# lab's own tests).
#
# The static checks read the checkout (sanity a copy of it, made in its first
# seconds); the tests write only where git ignores (.build, kmod-report, /tmp).
# So the checks run beside pytest, their output kept and printed after it:
# pytest leaves part of the 2 cores idle (qemu boots use one, rollouts wait
# on simulated drains and reboots). KMOD_TEST_SERIAL=1: one after the other,
# as before, each stage's output as it comes.
#
# Each stage's wall time, and the total, are printed at the end (also when a
# stage fails); pytest prints its 30 slowest tests itself (pytest.ini).
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
# pytest in KMOD_TEST_WORKERS processes (pytest-xdist; default one more than
# the cores: much of a lab test's time is waiting on simulated drains,
# reboots and API watches, so 2 workers on 2 cores left a sixth of the CPU
# idle). Each worker has a lab of its own (kmodlab.pytest_plugin);
# whole files go to one worker, in the order of a serial run (so a file's
# tests keep their order and module fixtures, and each worker runs a file
# after the same files a serial run would, of those it got).
# KMOD_TEST_WORKERS=0: one process, as before. At most 8: the workers' lab
# port ranges (kmodlab.pytest_plugin.MAX_WORKERS).
workers=$(($(nproc) + 1))
[ "$workers" -le 8 ] || workers=8
xdist=(-n "${KMOD_TEST_WORKERS:-$workers}" --dist loadfile --no-loadscope-reorder)
times=()
failed=()

record() {  # name, seconds, rc; in the background: into files, read back after pytest
  local line
  line=$(printf '%-26s %5d s%s' "$1" "$2" "$([ "$3" = 0 ] || echo "  FAILED (rc=$3)")")
  if [ -n "${record_dir:-}" ]; then
    echo "$line" >> "$record_dir/checks.times"
    [ "$3" = 0 ] || echo "$1" >> "$record_dir/checks.failed"
  else
    times+=("$line")
    [ "$3" = 0 ] || failed+=("$1")
  fi
}

stop_checks() {  # pytest interrupted: the background checks go too
  local pid
  if [ -n "${checks_pid:-}" ] && kill -0 "$checks_pid" 2>/dev/null; then
    for pid in $(descendants "$checks_pid") "$checks_pid"; do kill "$pid" 2>/dev/null || true; done
  fi
}

descendants() {
  local child
  for child in $(pgrep -P "$1" || true); do
    descendants "$child"
    echo "$child"
  done
}

report() {
  local rc=$?
  stop_checks
  echo "== wall time per stage"
  [ ${#times[@]} = 0 ] || printf '  %s\n' "${times[@]}"
  printf '  %-26s %5d s (%s)\n' "total" $(($(date +%s) - started)) "$([ "$rc" = 0 ] && [ ${#failed[@]} = 0 ] && echo passed || echo "failed: ${failed[*]:-rc=$rc}")"
}
trap report EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

run_stage() {  # name, command...: runs it in the foreground, records its time
  local name=$1 t0 rc=0
  shift
  echo "== $name"
  t0=$(date +%s)
  "$@" || rc=$?
  record "$name" $(($(date +%s) - t0)) "$rc"
  return 0
}

checks() {  # the static checks, one after the other (they share 2 cores with pytest)
  run_stage "ansible-test sanity" hack/sanity.sh
  run_stage "ansible-lint" ansible-lint
  run_stage "antsibull-changelog lint" antsibull-changelog lint
}

if [ "${KMOD_TEST_SERIAL:-}" = 1 ]; then
  checks
  run_stage "pytest" pytest "${xdist[@]}" "$@"
else
  logs=.build/test-logs
  mkdir -p "$logs"
  rm -f "$logs"/checks.*
  : > "$logs/checks.times"
  : > "$logs/checks.failed"
  echo "== static checks (sanity, ansible-lint, changelog lint) beside pytest; output after pytest"
  # At the lowest CPU priority: they take what pytest leaves idle (its
  # workers wait on simulated drains and reboots, and its last files run on
  # fewer workers than cores), instead of slowing its workers for minutes.
  (renice -n 19 -p "$BASHPID" > /dev/null; record_dir=$logs checks) > "$logs/checks.log" 2>&1 &
  checks_pid=$!
  run_stage "pytest" pytest "${xdist[@]}" "$@"
  checks_rc=0
  wait "$checks_pid" || checks_rc=$?
  checks_pid=""
  echo "== output of the static checks"
  cat "$logs/checks.log"
  mapfile -t -O ${#times[@]} times < "$logs/checks.times"
  mapfile -t -O ${#failed[@]} failed < "$logs/checks.failed"
  [ "$checks_rc" = 0 ] || failed+=("static checks (rc=$checks_rc)")
fi
[ ${#failed[@]} = 0 ]
