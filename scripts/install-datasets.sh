#!/usr/bin/env bash
# Installs the datasets Slipway's tests and demo read. Nothing is downloaded at run time:
# Fashion-MNIST comes from Debian's dataset-fashion-mnist (idx files under /usr/share/datasets),
# scikit-learn's bundled sets and vega_datasets' Auto MPG come with their PyPI packages.
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
if [ -f "$dir/train-images-idx3-ubyte.gz" ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo ">> installing Debian's dataset-fashion-mnist"
  if ! $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; then
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
  fi
else
  echo "warning: no apt-get here, so Fashion-MNIST ($dir) cannot be installed;" \
       "the demo falls back to scikit-learn's digits and the Fashion-MNIST tests will fail." >&2
fi
