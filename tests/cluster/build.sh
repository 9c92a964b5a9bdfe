#!/usr/bin/env bash
# Builds the test bed's binaries from the Go modules pinned in tests/cluster/tools/*/go.mod.
#
#   tests/cluster/build.sh            build what is missing or whose pins changed
#   tests/cluster/build.sh --force    rebuild everything
#   tests/cluster/build.sh buildkit crane    only these tools (what `make images` needs)
#
# Outputs go to tests/cluster/bin/ (git-ignored). Each tool records a stamp (a hash of its wrapper
# files and of the shell functions that build it); a tool is rebuilt only when its binaries are missing
# or the stamp differs, so adding a tool or changing one tool's build rebuilds only that tool. Build times are appended to tests/cluster/bin/build-times.txt.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin="$here/bin"
mkdir -p "$bin"
force=0
only=()
for arg in "$@"; do
  if [ "$arg" = "--force" ]; then force=1; continue; fi
  [ -d "$here/tools/$arg" ] || { echo "error: no tool '$arg'; the tools are: $(ls "$here/tools" | xargs)" >&2; exit 2; }
  only+=("$arg")
done

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

# The Kubernetes version stamped into the binaries. Unstamped, /version says v0.0.0 and helm
# refuses charts with a kubeVersion constraint.
module_version() {  # module_version TOOL MODULE: the version the wrapper module pins
  (cd "$here/tools/$1" && go list -m -f '{{.Version}}' "$2")
}
K8S_VERSION=$(module_version kubernetes k8s.io/kubernetes)
K8S_MAJOR=$(echo "${K8S_VERSION#v}" | cut -d. -f1)
K8S_MINOR=$(echo "${K8S_VERSION#v}" | cut -d. -f2)
case "$K8S_VERSION" in v1.*) ;; *) echo "error: cannot read the k8s.io/kubernetes pin ('$K8S_VERSION')" >&2; exit 1;; esac

stamp_of() {
  { cat "$here/tools/$1"/*; declare -f build "build_$1"; echo "$K8S_VERSION"; } | sha256sum | cut -c1-16
}

needs_build() {
  local tool=$1; shift
  if [ ${#only[@]} -gt 0 ] && [[ " ${only[*]} " != *" $tool "* ]]; then return 1; fi
  [ "$force" = 1 ] && return 0
  [ "$(cat "$bin/.stamp-$tool" 2>/dev/null)" = "$(stamp_of "$tool")" ] || return 0
  local b
  for b in "$@"; do [ -e "$bin/$b" ] || return 0; done
  return 1
}

build() {
  # build TOOL OUTPUT_NAME PACKAGE [ldflags]
  local tool=$1 out=$2 pkg=$3 ldflags=${4:-}
  echo ">> building $out from $pkg"
  (cd "$here/tools/$tool" && go build -trimpath -ldflags "-s -w $ldflags" -o "$bin/$out" "$pkg")
}

timed() {
  local tool=$1; shift
  local start=$SECONDS
  "$@"
  echo "$tool $((SECONDS - start))s $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$bin/build-times.txt"
  stamp_of "$tool" > "$bin/.stamp-$tool"
}

build_kubernetes() {
  local v=k8s.io/component-base/version c=k8s.io/client-go/pkg/version ld=""
  local p
  for p in $v $c; do
    ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$K8S_MAJOR -X $p.gitMinor=$K8S_MINOR"
    ld="$ld -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  local cmd
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
    build kubernetes "$cmd" "k8s.io/kubernetes/cmd/$cmd" "$ld"
  done
}

build_etcd() { build etcd etcd go.etcd.io/etcd/server/v3; }
build_helm() {
  # Stamped as helm's own Makefile stamps an official build: its version, and the Kubernetes version it
  # assumes without a cluster (`helm template`, `helm lint`) from the client-go it is built with. Unstamped,
  # that is v1.20 and charts with a newer kubeVersion constraint are refused.
  local hv cg major minor ld
  hv=$(module_version helm helm.sh/helm/v3)
  cg=$(module_version helm k8s.io/client-go)
  major=$(( $(echo "${cg#v}" | cut -d. -f1) + 1 ))
  minor=$(echo "${cg#v}" | cut -d. -f2)
  ld="-X helm.sh/helm/v3/internal/version.version=$hv"
  local p
  for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ld="$ld -X $p.k8sVersionMajor=$major -X $p.k8sVersionMinor=$minor"
  done
  build helm helm helm.sh/helm/v3/cmd/helm "$ld"
}
build_kwok() {
  build kwok kwok sigs.k8s.io/kwok/cmd/kwok
  # KWOK >= 0.8 needs Stage configs (how fake pods and nodes move through their lifecycle);
  # they ship inside its module zip.
  local dir
  dir=$(cd "$here/tools/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  # The same set as KWOK's own `stage/fast`: nodes become Ready and keep a heartbeat lease (without
  # it the node-lifecycle controller taints them NotReady), pods run, complete and are deleted.
  rm -rf "$bin/kwok-stages" && mkdir -p "$bin/kwok-stages"
  cp "$dir"/kustomize/stage/node/fast/node-initialize.yaml \
     "$dir"/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
     "$dir"/kustomize/stage/pod/fast/pod-{ready,complete,delete}.yaml "$bin/kwok-stages/"
  chmod u+w "$bin"/kwok-stages/*.yaml
}
build_cni() {
  # The plugins the real node's containerd calls: the bridge with host-local IPAM, and loopback.
  mkdir -p "$bin/cni"
  local p
  for p in main/bridge ipam/host-local main/loopback; do
    build cni "cni/${p#*/}" "github.com/containernetworking/plugins/plugins/$p"
  done
}
build_coredns() { build coredns coredns github.com/coredns/coredns; }
build_pause() { build pause pause .; }
build_buildkit() {
  local cmd
  for cmd in buildkitd buildctl; do build buildkit "$cmd" "github.com/moby/buildkit/cmd/$cmd"; done
}
build_seaweedfs() { build seaweedfs weed github.com/seaweedfs/seaweedfs/weed; }
build_crane() { build crane crane github.com/google/go-containerregistry/cmd/crane; }
build_kueue() {
  # Kueue's manager and its CRDs (v1beta2 stored), copied from the module as KubeRay's are.
  build kueue kueue sigs.k8s.io/kueue/cmd/kueue
  local dir
  dir=$(cd "$here/tools/kueue" && go list -m -f '{{.Dir}}' sigs.k8s.io/kueue)
  rm -rf "$bin/kueue-crds" && mkdir -p "$bin/kueue-crds"
  cp "$dir"/config/components/crd/bases/kueue.x-k8s.io_*.yaml "$bin/kueue-crds/"
  chmod u+w "$bin"/kueue-crds/*.yaml
}
build_metrics-server() { build metrics-server metrics-server sigs.k8s.io/metrics-server/cmd/metrics-server; }
build_kuberay() {
  # The operator (its main package is the module root; the version is a constant, nothing to stamp) and
  # the RayJob/RayCluster/RayService CRDs that ship inside the module.
  build kuberay kuberay-operator github.com/ray-project/kuberay/ray-operator
  local dir
  dir=$(cd "$here/tools/kuberay" && go list -m -f '{{.Dir}}' github.com/ray-project/kuberay/ray-operator)
  rm -rf "$bin/kuberay-crds" && mkdir -p "$bin/kuberay-crds"
  cp "$dir"/config/crd/bases/ray.io_*.yaml "$bin/kuberay-crds/"
  chmod u+w "$bin"/kuberay-crds/*.yaml
}

if needs_build etcd etcd; then timed etcd build_etcd; fi
if needs_build kubernetes kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; then
  timed kubernetes build_kubernetes
fi
if needs_build kwok kwok; then timed kwok build_kwok; fi
if needs_build helm helm; then timed helm build_helm; fi
if needs_build cni cni/bridge cni/host-local cni/loopback; then timed cni build_cni; fi
if needs_build coredns coredns; then timed coredns build_coredns; fi
if needs_build pause pause; then timed pause build_pause; fi
if needs_build buildkit buildkitd buildctl; then timed buildkit build_buildkit; fi
if needs_build seaweedfs weed; then timed seaweedfs build_seaweedfs; fi
if needs_build kuberay kuberay-operator kuberay-crds/ray.io_rayjobs.yaml; then timed kuberay build_kuberay; fi
if needs_build crane crane; then timed crane build_crane; fi
if needs_build kueue kueue kueue-crds/kueue.x-k8s.io_workloads.yaml; then timed kueue build_kueue; fi
if needs_build metrics-server metrics-server; then timed metrics-server build_metrics-server; fi
echo ">> test bed binaries ready in $bin"
