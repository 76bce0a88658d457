#!/usr/bin/env bash
# The full suite: start real Kafka and Cassandra, run every tier, always stop the servers.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
start=$(date +%s)

stop_servers() {
  echo "== stopping local servers"
  $PY deploy/local/infra.py down || true
}
trap stop_servers EXIT

echo "== starting real Kafka and Cassandra on 127.0.0.1 (deploy/local/infra.py)"
if ! $PY deploy/local/infra.py up; then
  echo "could not start the local servers; see the log tail above" >&2
  exit 1
fi

echo "== running the suite"
$PY -m pytest tests -p no:cacheprovider --durations=15 -ra "$@"
rc=$?
echo "== make test finished in $(( $(date +%s) - start ))s (pytest exit $rc)"
exit $rc
