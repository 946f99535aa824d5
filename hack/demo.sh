#!/usr/bin/env bash
# The main job end to end on the embedded lab: start the lab (registry, lab
# releases, lab clusters), then run the collection's playbook against the
# inventory the lab wrote. The lab stays up afterwards (`make lab-down`).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/env.sh
source hack/env.sh
python -m kmodlab up --releases 4.12.77,4.16.30 --clusters 2 --workers 2 --node-mode qemu
inventory=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["inventory"])' .lab/lab.json)
ansible-playbook -i "$inventory" playbooks/resolve.yml
