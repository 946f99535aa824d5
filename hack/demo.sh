#!/usr/bin/env bash
# The main job end to end on the embedded lab: start the lab (a registry, two
# lab releases on different kernels, two clusters with two workers each whose
# nodes boot in qemu), run playbooks/site.yml over the inventory the lab
# wrote (resolve -> build -> publish -> rollout -> verify), print the report.
# The lab stays up afterwards for a look around (`make lab-down`).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/env.sh
source hack/env.sh
python -m kmodlab up --releases 4.12.77,4.16.30 --clusters 2 --workers 2 --node-mode qemu
inventory=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["inventory"])' .lab/lab.json)
ansible-playbook -i "$inventory" playbooks/site.yml
echo
echo "== Verification report (kmod-report/summary.txt; per cluster: kmod-report/<cluster>.json)"
cat kmod-report/summary.txt
echo
echo "Run 'make demo' again: nothing is built, pushed or written (changed=0). 'make lab-down' stops the lab."
