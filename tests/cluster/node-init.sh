#!/usr/bin/env bash
# The first process of the real node's namespaces, run by
#   unshare --mount --net --propagation private -- node-init.sh DIR NODE_IP/PREFIX SERVICE_CIDR
# It makes the node's private filesystem view and network, then holds the namespaces until it is killed.
# Nothing here reaches the host: mounts are private to the namespace, the bridge and routes live in it.
set -euo pipefail
dir=$1 node_addr=$2 service_cidr=$3

# What containerd and the kubelet write to fixed paths (/run/containerd, /run/netns, /var/lib/kubelet,
# /var/lib/cni, /var/log/pods, /var/log/containers) lands in a tmpfs or in the test bed's folder.
mount -t tmpfs -o mode=0755 slipway-node-run /run
mkdir -p "$dir/var-lib" "$dir/var-log"
mount --bind "$dir/var-lib" /var/lib
mount --bind "$dir/var-log" /var/log
# Processes in the node (CoreDNS's clients, the kubelet's dnsPolicy=Default pods) resolve with the node's DNS.
mount --bind "$dir/resolv.conf" /etc/resolv.conf

# The kubelet (protectKernelDefaults) checks these kernel settings and would otherwise set them host-wide;
# here it reads the values it expects from files bound over the entries, in this namespace only.
mkdir -p "$dir/sysctl"
for setting in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
               kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
  key=${setting%%=*} value=${setting#*=}
  file="$dir/sysctl/${key//\//.}"
  echo "$value" > "$file"
  mount --bind "$file" "/proc/sys/$key"
done

# The node's network: a bridge that is also the node's address, the CNI bridge plugin's gateway and where
# the test bed's forwarders listen; Service addresses route onto it so kube-proxy's rules see them.
ip link set lo up
ip link add cni0 type bridge
ip addr add "$node_addr" dev cni0
ip link set cni0 up
ip route add "$service_cidr" dev cni0

touch "$dir/ready"
exec sleep infinity
