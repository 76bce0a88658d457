#!/usr/bin/env bash
# Build the pinned `kubeconform` (Kubernetes manifest validator) from the Go module proxy into
# .tools/bin/kubeconform (no prebuilt download).
#
#   deploy/tools/kubeconform.sh                  # build unless .tools/bin/kubeconform already is
#                                                # KUBECONFORM_VERSION
#   KUBECONFORM_VERSION=v0.7.0 deploy/tools/kubeconform.sh
#
# kubeconform is not a Debian package and prebuilt binaries cannot be fetched here, so it is
# compiled with `go install` (with upstream's `-X main.version` so `kubeconform -v` reports the
# tag). It validates offline only: the JSON schemas it checks the chart against are generated
# locally by deploy/tools/k8s_schemas.py, and tests/chart/test_kubeconform.py never lets it use
# its default (network) schema location.
# Measured on the 2-core dev/CI box (go1.26.8): 25-40 seconds with empty Go module and build
# caches (dependency downloads included; 74 MB of modules, 111 MB of build cache), about 1 second
# when the Go caches are warm. A binary already at KUBECONFORM_VERSION is kept (checked through
# its embedded module version). v0.7.0 builds with go1.26.8 too; v0.8.0 is pinned as the newest
# release (it asks for go 1.26, fixes a nil-schema panic and a Go-duration format check).
set -euo pipefail

KUBECONFORM_VERSION="${KUBECONFORM_VERSION:-v0.8.0}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN_DIR="$ROOT/.tools/bin"
KUBECONFORM="$BIN_DIR/kubeconform"
MODULE="github.com/yannh/kubeconform"

say() { printf '== kubeconform: %s\n' "$*" >&2; }

installed_version() {
  # The module version recorded in the binary's build info.
  go version -m "$KUBECONFORM" 2>/dev/null | awk -v m="$MODULE" '$1 == "mod" && $2 == m { print $3 }'
}

if ! command -v go >/dev/null 2>&1; then
  say "go is not installed; install Go >= 1.26 (the version kubeconform $KUBECONFORM_VERSION's go.mod asks for)"
  exit 1
fi

if [[ -x "$KUBECONFORM" && "$(installed_version)" == "$KUBECONFORM_VERSION" ]]; then
  say "$KUBECONFORM is already $KUBECONFORM_VERSION; nothing to do"
  exit 0
fi

start=$(date +%s)
mkdir -p "$BIN_DIR"
say "building $MODULE/cmd/kubeconform@$KUBECONFORM_VERSION with $(go version | awk '{print $3}') into $KUBECONFORM"
say "compiling (downloads the module and its dependencies from $(go env GOPROXY) on the first run)"
GOBIN="$BIN_DIR" CGO_ENABLED=0 go install -trimpath -ldflags "-w -s -X main.version=$KUBECONFORM_VERSION" \
  "$MODULE/cmd/kubeconform@$KUBECONFORM_VERSION"

got="$(installed_version)"
if [[ "$got" != "$KUBECONFORM_VERSION" ]]; then
  say "built binary reports module version '$got', expected $KUBECONFORM_VERSION"
  exit 1
fi
say "built kubeconform $("$KUBECONFORM" -v) in $(( $(date +%s) - start ))s -> $KUBECONFORM"
