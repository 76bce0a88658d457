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
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN_DIR="$ROOT/.tools/bin"
HELM="$BIN_DIR/helm"
MODULE="helm.sh/helm/v3"

say() { printf '== helm: %s\n' "$*" >&2; }

installed_version() {
  # The module version recorded in the binary's build info (exact, unlike `helm version`
  # of a binary built without the upstream -X flags).
  go version -m "$HELM" 2>/dev/null | awk -v m="$MODULE" '$1 == "mod" && $2 == m { print $3 }'
}

if ! command -v go >/dev/null 2>&1; then
  say "go is not installed; install Go >= 1.26 (the version helm $HELM_VERSION's go.mod asks for)"
  exit 1
fi

if [[ -x "$HELM" && "$(installed_version)" == "$HELM_VERSION" ]]; then
  say "$HELM is already $HELM_VERSION; nothing to do"
  exit 0
fi

start=$(date +%s)
mkdir -p "$BIN_DIR"
say "building $MODULE/cmd/helm@$HELM_VERSION with $(go version | awk '{print $3}') into $HELM"
say "downloading the module from the Go module proxy ($(go env GOPROXY))"
mod_json="$(go mod download -json "$MODULE@$HELM_VERSION")"
gomod="$(printf '%s\n' "$mod_json" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"

# Upstream derives the default Kubernetes version from its client-go (v0.N.x -> 1.N).
k8s_minor="$(awk '$1 == "k8s.io/client-go" { split($2, v, "."); print v[2] }' "$gomod")"
k8s_minor="${k8s_minor:-20}"
say "default Kubernetes version compiled in: 1.$k8s_minor (from k8s.io/client-go in its go.mod)"

ldflags="-w -s"
ldflags+=" -X $MODULE/internal/version.version=$HELM_VERSION"
ldflags+=" -X $MODULE/internal/version.gitTreeState=clean"
for pkg in pkg/lint/rules pkg/chartutil; do
  ldflags+=" -X $MODULE/$pkg.k8sVersionMajor=1 -X $MODULE/$pkg.k8sVersionMinor=$k8s_minor"
done

say "compiling (downloads dependencies on the first run; about 2 minutes cold on 2 cores)"
GOBIN="$BIN_DIR" CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" "$MODULE/cmd/helm@$HELM_VERSION"

got="$(installed_version)"
if [[ "$got" != "$HELM_VERSION" ]]; then
  say "built binary reports module version '$got', expected $HELM_VERSION"
  exit 1
fi
say "built $("$HELM" version --short) in $(( $(date +%s) - start ))s -> $HELM"
