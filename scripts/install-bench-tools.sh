#!/usr/bin/env bash
# The load generators and the peer of the serving benchmarks: wrk from Debian (REST), ghz from the Go module proxy
# (gRPC), and KServe's model server in a virtual environment of its own (it pins its own FastAPI and protobuf),
# all under benchmarks/.out except wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/.out
mkdir -p "$out/bin"
if ! command -v wrk >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get install -y -qq wrk >/dev/null 2>&1 || { $sudo apt-get update -qq >/dev/null; $sudo apt-get install -y -qq wrk >/dev/null; }
  else
    echo "warning: wrk is not installed and there is no apt-get: the serving benchmarks will not run" >&2
  fi
fi
if [ ! -x "$out/bin/ghz" ]; then
  GOBIN="$(pwd)/$out/bin" go install github.com/bojand/ghz/cmd/ghz@v0.120.0
fi
if [ ! -x "$out/kserve-venv/bin/python" ]; then
  python3 -m venv "$out/kserve-venv"
  "$out/kserve-venv/bin/pip" install -q "kserve==0.21.0" "onnxruntime==1.32.0"
fi
