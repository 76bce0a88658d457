#!/usr/bin/env bash
# Build the pinned `helm` CLI from the Go module proxy into .tools/bin/helm (no prebuilt download).
#
#   deploy/tools/helm.sh            # build unless .tools/bin/helm already is HELM_VERSION
#   HELM_VERSION=v3.21.4 deploy/tools/helm.sh
#
# helm is not a Debian package and prebuilt binaries cannot be fetched here, so it is compiled
# with `go install` exactly like upstream's Makefile does (same -X flags, so `helm version` and
# the default Kubernetes version that `helm template`/`helm lint` assume are right).
# Measured on the 2-core dev/CI box (go1.26.8): about 2 minutes with empty Go module and build
# caches (dependency downloads included), about 7 seconds when the Go caches are warm. A binary
# already at HELM_VERSION is kept (checked through its embedded module version).
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
MODULE="helm.sh/helm/v3"
# shellcheck source=deploy/tools/gotool.sh
source "$(dirname "${BASH_SOURCE[0]}")/gotool.sh"
gotool_require_go helm "helm $HELM_VERSION"
if [[ -x "$GOTOOL_BIN/helm" && "$(gotool_version "$GOTOOL_BIN/helm" "$MODULE")" == "$HELM_VERSION" ]]; then
  gotool_say helm "$GOTOOL_BIN/helm is already $HELM_VERSION; nothing to do"
  exit 0
fi

gotool_say helm "reading $MODULE@$HELM_VERSION's go.mod from the Go module proxy"
mod_json="$(go mod download -json "$MODULE@$HELM_VERSION")"
gomod="$(printf '%s\n' "$mod_json" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"

# Upstream derives the default Kubernetes version from its client-go (v0.N.x -> 1.N).
k8s_minor="$(awk '$1 == "k8s.io/client-go" { split($2, v, "."); print v[2] }' "$gomod")"
k8s_minor="${k8s_minor:-20}"
gotool_say helm "default Kubernetes version compiled in: 1.$k8s_minor (from k8s.io/client-go in its go.mod)"

ldflags="-X $MODULE/internal/version.version=$HELM_VERSION"
ldflags+=" -X $MODULE/internal/version.gitTreeState=clean"
for pkg in pkg/lint/rules pkg/chartutil; do
  ldflags+=" -X $MODULE/$pkg.k8sVersionMajor=1 -X $MODULE/$pkg.k8sVersionMinor=$k8s_minor"
done
gotool_build helm "$MODULE" "$MODULE/cmd/helm" "$HELM_VERSION" "$ldflags" "" \
  "about 2 minutes cold on 2 cores"
