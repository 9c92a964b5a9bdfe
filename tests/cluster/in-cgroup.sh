#!/usr/bin/env bash
# in-cgroup.sh ROOT COMMAND...: runs COMMAND in the cgroup ROOT/system of every cgroup hierarchy, so that
# the real node's components and everything they start (containerd's shims, the containers) can be found,
# and killed, under ROOT when the node stops (tests/cluster/node.py).
set -euo pipefail
root=$1; shift
while read -r mnt; do
  echo $$ > "$mnt/$root/system/cgroup.procs"
done < <(awk '{ for (i = 1; i <= NF; i++) if ($i == "-") { if ($(i+1) ~ /^cgroup2?$/) print $5; break } }' /proc/self/mountinfo)
exec "$@"
