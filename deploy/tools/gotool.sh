# shellcheck shell=bash
# Shared by helm.sh, promtool.sh and kubeconform.sh (source it): build one pinned Go command from
# the Go module proxy with `go install` into .tools/bin, unless the binary there already carries
# that module version in its build info.
#
#   gotool_build NAME MODULE PACKAGE VERSION [LDFLAGS] [TAGS] [HINT]
#
# NAME is the binary, PACKAGE its import path (MODULE/cmd/NAME), LDFLAGS extra -ldflags (after
# "-w -s"), TAGS go build tags, HINT what the first build costs. Exits 1 with what to do when go
# is missing or the built binary does not report VERSION.

GOTOOL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
GOTOOL_BIN="$GOTOOL_ROOT/.tools/bin"

gotool_say() { printf '== %s: %s\n' "$1" "${*:2}" >&2; }

# The module version recorded in a binary's build info (exact, unlike a `version` subcommand of a
# binary built without upstream's -X flags).
gotool_version() {
  go version -m "$1" 2>/dev/null | awk -v m="$2" '$1 == "mod" && $2 == m { print $3 }'
}

gotool_require_go() {
  if ! command -v go >/dev/null 2>&1; then
    gotool_say "$1" "go is not installed; install Go >= 1.26 (what $2's go.mod asks for)"
    exit 1
  fi
}

gotool_build() {
  local name="$1" module="$2" package="$3" version="$4" ldflags="${5:-}" tags="${6:-}"
  local hint="${7:-downloads the module and its dependencies on the first run}"
  local bin="$GOTOOL_BIN/$name" start got
  gotool_require_go "$name" "$module $version"
  if [[ -x "$bin" && "$(gotool_version "$bin" "$module")" == "$version" ]]; then
    gotool_say "$name" "$bin is already $version; nothing to do"
    return 0
  fi
  start=$(date +%s)
  mkdir -p "$GOTOOL_BIN"
  gotool_say "$name" "building $package@$version with $(go version | awk '{print $3}') into $bin"
  gotool_say "$name" "compiling from the Go module proxy ($(go env GOPROXY)): $hint"
  GOBIN="$GOTOOL_BIN" CGO_ENABLED=0 go install -trimpath ${tags:+-tags "$tags"} \
    -ldflags "-w -s $ldflags" "$package@$version"
  got="$(gotool_version "$bin" "$module")"
  if [[ "$got" != "$version" ]]; then
    gotool_say "$name" "built binary reports module version '$got', expected $version"
    exit 1
  fi
  gotool_say "$name" "built $bin ($version) in $(( $(date +%s) - start ))s"
}
