#!/bin/sh
# Collects the kernel modules a source tree built, after checking each was
# built for the target kernel: a .ko whose vermagic names another kernel is
# refused by the node (modprobe: "Exec format error"), so the image build must
# fail here instead, saying which module, what it was built for, and what the
# target is.
#
# Usage: check-vermagic.sh KERNEL_VERSION MODULE_NAME SOURCE_DIR OUT_DIR
#   Every *.ko under SOURCE_DIR is checked and copied to OUT_DIR;
#   SOURCE_DIR must have produced MODULE_NAME.ko.
set -eu

if [ "$#" -ne 4 ]; then
	echo "usage: $0 KERNEL_VERSION MODULE_NAME SOURCE_DIR OUT_DIR" >&2
	exit 2
fi
expected=$1
name=$2
source_dir=$3
out_dir=$4

kos=$(find "$source_dir" -type f -name '*.ko' | sort)
if ! printf '%s\n' "$kos" | grep -q "/${name}\.ko\$"; then
	echo "kmod-layering: module ${name}: the build produced no ${name}.ko" \
		"(found: $(printf '%s' "${kos:-none}" | tr '\n' ' '))" >&2
	exit 1
fi

mkdir -p "$out_dir"
status=0
for ko in $kos; do
	module=$(basename "$ko" .ko)
	if ! vermagic=$(modinfo -F vermagic "$ko") || [ -z "$vermagic" ]; then
		echo "kmod-layering: module ${module} (${ko}): cannot read its vermagic" >&2
		status=1
		continue
	fi
	# vermagic is "<kernel release> SMP preempt mod_unload ..."; the first
	# word is the kernel the module was compiled against.
	found=${vermagic%% *}
	if [ "$found" != "$expected" ]; then
		echo "kmod-layering: vermagic mismatch: module ${module} (${ko}) was built" \
			"for kernel ${found}, but the target kernel is ${expected};" \
			"build it against the target kernel's headers (a DTK whose kernel" \
			"matches the RHCOS image)" >&2
		status=1
		continue
	fi
	echo "kmod-layering: module ${module}: vermagic ${found} matches the target kernel"
	cp "$ko" "$out_dir/"
done
exit "$status"
