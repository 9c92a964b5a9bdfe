#!/usr/bin/env bash
# Installs the Debian packages the test bed's real node runs on: containerd and runc (the container
# runtime), nftables' `nft` (kube-proxy's nftables mode calls it), util-linux's unshare/nsenter, and
# debootstrap (makes the images' Debian base from Debian's packages; tests/cluster/buildkit.py).
# Nothing is started here: the test bed runs its own containerd with its own root, state and socket,
# inside namespaces it makes (tests/cluster/node.py); no service of these packages is enabled.
set -euo pipefail
need=()
command -v containerd >/dev/null 2>&1 || need+=(containerd)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: the test bed's real node needs ${need[*]}; install them with your package manager." >&2
  exit 1
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo ">> installing Debian's ${need[*]} for the test bed's real node"
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1; then
  $sudo apt-get update -qq >/dev/null
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
