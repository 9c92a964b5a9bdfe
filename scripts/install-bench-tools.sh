#!/usr/bin/env bash
# The load generator of benchmarks/serve_vs_naive.py: wrk, from Debian.
set -euo pipefail
command -v wrk >/dev/null 2>&1 && exit 0
if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y -qq wrk >/dev/null 2>&1 || { $sudo apt-get update -qq >/dev/null; $sudo apt-get install -y -qq wrk >/dev/null; }
else
  echo "warning: wrk is not installed and there is no apt-get: the serving benchmark will not run" >&2
fi
