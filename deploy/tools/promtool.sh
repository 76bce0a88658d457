#!/usr/bin/env bash
# Build the pinned `promtool` (Prometheus' rule checker and rule unit-test runner) from the Go
# module proxy into .tools/bin/promtool, for `promtool test rules` on the chart's alerts.
#
#   deploy/tools/promtool.sh                       # build unless already PROMETHEUS_MODULE_VERSION
#   PROMETHEUS_MODULE_VERSION=v0.316.0 deploy/tools/promtool.sh
#
# Prometheus tags its Go module v0.<major><minor>.<patch> (v0.316.0 is Prometheus 3.16.0); the
# version is stamped in with upstream's -X flags (.promu.yml), so `promtool --version` is right.
# Built with -tags remove_all_sd: the optional service-discovery plugins (AWS, Azure, GCE...) are
# left out, as upstream's build tags allow; rule checks and rule tests do not use them, and the
# build is much smaller. Same style as deploy/tools/helm.sh: a binary already at the pinned module
# version is kept (checked through its embedded build info).
set -euo pipefail

PROMETHEUS_MODULE_VERSION="${PROMETHEUS_MODULE_VERSION:-v0.316.0}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN_DIR="$ROOT/.tools/bin"
PROMTOOL="$BIN_DIR/promtool"
MODULE="github.com/prometheus/prometheus"

say() { printf '== promtool: %s\n' "$*" >&2; }

installed_version() {
  go version -m "$PROMTOOL" 2>/dev/null | awk -v m="$MODULE" '$1 == "mod" && $2 == m { print $3 }'
}

if ! command -v go >/dev/null 2>&1; then
  say "go is not installed; install Go >= 1.26 (Prometheus $PROMETHEUS_MODULE_VERSION's go.mod asks for it)"
  exit 1
fi

if [[ -x "$PROMTOOL" && "$(installed_version)" == "$PROMETHEUS_MODULE_VERSION" ]]; then
  say "$PROMTOOL is already $PROMETHEUS_MODULE_VERSION; nothing to do"
  exit 0
fi

# v0.316.0 -> 3.16.0
digits="${PROMETHEUS_MODULE_VERSION#v0.}"
majmin="${digits%%.*}"
patch="${digits#*.}"
release="${majmin:0:1}.$((10#${majmin:1})).$patch"

start=$(date +%s)
mkdir -p "$BIN_DIR"
say "building $MODULE/cmd/promtool@$PROMETHEUS_MODULE_VERSION (Prometheus $release) with $(go version | awk '{print $3}') into $PROMTOOL"
say "downloading modules from the Go module proxy ($(go env GOPROXY)) and compiling: about 4 minutes cold on 2 cores"
ldflags="-w -s -X github.com/prometheus/common/version.Version=$release"
ldflags+=" -X github.com/prometheus/common/version.Branch=HEAD"
GOBIN="$BIN_DIR" CGO_ENABLED=0 go install -trimpath -tags netgo,remove_all_sd -ldflags "$ldflags" \
  "$MODULE/cmd/promtool@$PROMETHEUS_MODULE_VERSION"

got="$(installed_version)"
if [[ "$got" != "$PROMETHEUS_MODULE_VERSION" ]]; then
  say "built binary reports module version '$got', expected $PROMETHEUS_MODULE_VERSION"
  exit 1
fi
say "built $("$PROMTOOL" --version 2>&1 | head -1) in $(( $(date +%s) - start ))s -> $PROMTOOL"
