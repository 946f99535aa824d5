#!/usr/bin/env bash
# The fleet benchmark (tests/bench): starts its own lab (.build/lab-bench,
# ports 30000+), runs every measurement once, prints one table and writes it
# to docs/performance.md. Arguments go to the harness (--quick, --scale 6,12,
# --rows 6,7,8, --help); a run with arguments does not touch
# docs/performance.md unless --doc is given (then a run of some rows keeps
# the document's other rows, each with the run that measured it).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$#" -eq 0 ]; then
  set -- --doc docs/performance.md
fi
exec python -m bench.run "$@"
