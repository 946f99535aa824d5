#!/usr/bin/env bash
# Installs everything the lab and the tests need on a fresh Debian machine:
# Debian packages from bindep.txt (apt-get; first, without recommends, the
# aarch64 emulation and arm64 dpkg architecture), a pinned Python venv in .venv,
# and the .build/collections tree that makes this checkout importable as
# ansible_collections.ocp.kmod_layering. Safe to rerun; fast when done.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD

# The venv's interpreter: Debian's python3 where there is one. It is built
# with profile-guided optimisation and LTO; a source build without
# --enable-optimizations (pyenv's default, first on this machine kind's PATH)
# spent a fifth more CPU on the same module imports and playbook runs, and
# nearly all of a run's CPU is Python (ansible-playbook and module processes).
# PYTHON=... chooses another.
python=${PYTHON:-python3}
if [ -z "${PYTHON:-}" ] && [ -x /usr/bin/python3 ] && command -v dpkg-query > /dev/null; then
  python=/usr/bin/python3
fi
if [ ! -x .venv/bin/python ]; then
  # Debian's venv module is a package of its own (bindep runs from the venv,
  # so it cannot install this one).
  if [ "$python" = /usr/bin/python3 ] \
    && ! dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q "ok installed"; then
    echo "setup: installing Debian packages: python3-venv"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
  fi
  "$python" -m venv .venv
fi
if ! cmp -s tests/requirements.txt .venv/.requirements.txt; then
  .venv/bin/pip install --disable-pip-version-check -q -r tests/requirements.txt
  cp tests/requirements.txt .venv/.requirements.txt
fi

# Builds and boots for aarch64 on this (x86_64) machine: user-mode emulation
# registered through binfmt_misc (podman build --platform linux/arm64) and
# qemu-system-aarch64 (the arm64 lab nodes, the aarch64 boot test). Debian
# packages only, without their recommends (binfmt-support's would pull in
# unrelated interpreters); arm64 .debs (the lab's aarch64 release) come from
# the same Debian archive once dpkg knows the architecture.
if [ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ]; then
  need=""
  for pkg in qemu-user-static binfmt-support qemu-system-arm; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need="$need $pkg"
  done
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
    need="$need (arm64 .debs)"
  fi
  if [ -n "$need" ]; then
    echo "setup: aarch64 emulation:$need"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends qemu-user-static binfmt-support qemu-system-arm
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || echo "setup: cannot mount binfmt_misc (aarch64 builds will fail)" >&2
  fi
  handler=/proc/sys/fs/binfmt_misc/qemu-aarch64
  if [ -e /proc/sys/fs/binfmt_misc/status ] && ! grep -q '^flags: .*F' "$handler" 2>/dev/null; then
    # F (fix binary): the kernel opens the interpreter now, so it works inside
    # build chroots that lack /usr/libexec/qemu-binfmt.
    [ -e "$handler" ] && echo -1 > "$handler"
    update-binfmts --import qemu-aarch64 >/dev/null 2>&1 || true
    grep -q '^flags: .*F' "$handler" 2>/dev/null \
      || echo "setup: qemu-aarch64 binfmt handler not registered with the F flag" >&2
  fi
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
