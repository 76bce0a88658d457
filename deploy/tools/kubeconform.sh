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
# shellcheck source=deploy/tools/gotool.sh
source "$(dirname "${BASH_SOURCE[0]}")/gotool.sh"

gotool_build kubeconform github.com/yannh/kubeconform \
  github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION" \
  "-X main.version=$KUBECONFORM_VERSION" "" "25-40 s cold on 2 cores"
