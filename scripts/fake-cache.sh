#!/usr/bin/env bash
# Run a command while the CPU cache sizes in sysfs read as other values, to check that training
# gives the same bytes whatever cache geometry a library might size its blocks for (candle's
# matmul, the gemm crate, does; the training engine reads none: docs/DESIGN.md §7). Needs root
# and a kernel that allows mount namespaces.
#
#   scripts/fake-cache.sh L1_SIZE L1_WAYS L2_SIZE COMMAND...
#   scripts/fake-cache.sh 48K 12 2048K cargo test --test zoo_reproduce
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: $0 L1_SIZE L1_WAYS L2_SIZE COMMAND..." >&2
    exit 2
fi
l1=$1 ways=$2 l2=$3
shift 3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo "$l1" >"$dir/l1"
echo "$ways" >"$dir/ways"
echo "$l2" >"$dir/l2"
unshare -m bash -c '
set -e
d=$1; shift
for c in /sys/devices/system/cpu/cpu[0-9]*; do
    mount --bind "$d/l1" "$c/cache/index0/size"
    mount --bind "$d/ways" "$c/cache/index0/ways_of_associativity"
    mount --bind "$d/l2" "$c/cache/index2/size"
done
"$@"' bash "$dir" "$@"
