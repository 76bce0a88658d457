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
MODULE="github.com/prometheus/prometheus"
# shellcheck source=deploy/tools/gotool.sh
source "$(dirname "${BASH_SOURCE[0]}")/gotool.sh"

# v0.316.0 -> 3.16.0
digits="${PROMETHEUS_MODULE_VERSION#v0.}"
majmin="${digits%%.*}"
release="${majmin:0:1}.$((10#${majmin:1})).${digits#*.}"

gotool_build promtool "$MODULE" "$MODULE/cmd/promtool" "$PROMETHEUS_MODULE_VERSION" \
  "-X github.com/prometheus/common/version.Version=$release -X github.com/prometheus/common/version.Branch=HEAD" \
  netgo,remove_all_sd "Prometheus $release; about 4 minutes cold on 2 cores"
