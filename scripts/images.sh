#!/usr/bin/env bash
# Builds Slipway's three images from images/*/Dockerfile and, given a registry, pushes them (`make images`).
#
#   make images                                          build; with BuildKit, docker archives in the cache
#   make images REGISTRY=registry.example.com/slipway TAG=0.1.0    build and push <registry>/<image>:<tag>
#
# With a working Docker engine it runs `docker build` and `docker push`; otherwise (or with BUILDER=buildkit) it
# builds the same Dockerfiles with BuildKit, air-gapped, from a Debian base and a wheelhouse
# (tests/cluster/buildkit.py), and pushes with crane. IMAGES="operator server" builds only those.
set -euo pipefail
cd "$(dirname "$0")/.."
registry=${REGISTRY:-}
tag=${TAG:-dev}
images=${IMAGES:-operator trainer server}
py=${PY:-.venv/bin/python}
builder=${BUILDER:-}
if [ -z "$builder" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then builder=docker; else builder=buildkit; fi
fi
case "$builder" in
  docker)
    for name in $images; do
      ref="${registry:-slipway}/$name:$tag"
      echo ">> docker build -f images/$name/Dockerfile -t $ref ."
      docker build -f "images/$name/Dockerfile" -t "$ref" .
      if [ -n "$registry" ]; then docker push "$ref"; fi
    done
    ;;
  buildkit)
    scripts/install-node-packages.sh  # runc (BuildKit's worker) and debootstrap (the base)
    tests/cluster/build.sh buildkit crane
    # shellcheck disable=SC2086
    "$py" tests/cluster/buildkit.py ${registry:+--push "$registry" --tag "$tag"} $images
    ;;
  *)
    echo "error: BUILDER=$builder: use docker or buildkit" >&2
    exit 2
    ;;
esac
