# SarahService. Every target sets up .venv first, so a fresh clone needs only python3 and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run cluster test deploy-test ha-test typecheck lint protos openapi manifests bench soak fuzz clean

$(STAMP): pyproject.toml kapso/package-lock.json ts/package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[server,dev]' --config-settings editable_mode=compat
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" npm ci --prefix kapso --no-audit --no-fund --loglevel=error
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" npm ci --prefix ts --no-audit --no-fund --loglevel=error
	touch $@

## run: the gRPC server (127.0.0.1:50051) and Envoy (127.0.0.1:8080) in the foreground; Ctrl-C stops both
run: $(STAMP)
	$(PY) -m tools.stack

## cluster: PostgreSQL, three replicas (127.0.0.1:50051-50053) and Envoy on 127.0.0.1:8080
cluster: $(STAMP)
	$(PY) -m tools.cluster

## test: the type check and the lint, then the whole suite against real servers on free
## loopback ports, on TEST_WORKERS pytest-xdist workers (each with its own PostgreSQL and
## ports), printing the 30 slowest tests; TEST_WORKERS=0 runs them in one process
TEST_WORKERS ?= 2
test: typecheck lint
	$(PY) -m pytest -n $(TEST_WORKERS) --durations=30

## ha-test: the service through PostgreSQL failovers under load (tests/ha, left out of `make
## test`): etcd and three Patroni nodes on loopback with docs/operations.md's config, from
## Debian's patroni, etcd-server and postgresql-15 (installed when missing, as root); a lost
## primary, a switchover, a rejoin; prints the outages and counts. About 70 s; stopped
## by SIGINT after HA_TEST_SECONDS, so that it still cleans up every process it started.
HA_TEST_SECONDS ?= 600
ha-test: $(STAMP)
	timeout --signal=INT --kill-after=60 $(HA_TEST_SECONDS) $(PY) -m pytest tests/ha -s -p no:cacheprovider

## typecheck: mypy --strict over the service and the client (the generated .pyi files type
## the protobuf messages and stubs), and the in-memory store the unit tests use; tsc over
## the TypeScript example and tests (ts/tsconfig.json)
typecheck: $(STAMP)
	$(PY) -m mypy --strict server client tests/support/memory_store.py
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" ts/node_modules/.bin/tsc -p ts

## lint: ruff on the Python code, buf lint on the proto, buf breaking against the last
## released descriptor (buf.yaml says which changes since are known and why)
RELEASED_DESCRIPTOR := protos/released/sarah-v1.0.binpb
lint: $(STAMP)
	$(VENV)/bin/ruff check server client tests protos bench tools deploy harness
	$(VENV)/bin/buf lint sarah/v1/sarah.pb#format=binpb --config buf.yaml
	$(VENV)/bin/buf breaking sarah/v1/sarah.pb#format=binpb \
		--against $(RELEASED_DESCRIPTOR)#format=binpb --config buf.yaml

## protos: regenerate sarah/v1 (stubs, .pyi, descriptor set) and ts/gen (TypeScript, with
## buf and ts/'s protoc-gen-es) from protos/ alone
protos: $(STAMP)
	$(PY) protos/generate.py

## openapi: regenerate openapi.yaml (the HTTP API for Kapso authors) from sarah/v1/sarah.pb;
## tests/unit/test_openapi.py fails while the committed file is stale
openapi: $(STAMP)
	$(PY) -m tools.openapi

## manifests: regenerate deploy/kubernetes/envoy-configmap.yaml (Envoy's config for the Pod)
## from envoy.yaml; tests/unit/test_kubernetes.py fails while the committed file is stale
manifests: $(STAMP)
	$(PY) -m deploy.pod configmap > deploy/kubernetes/envoy-configmap.yaml

## deploy-test: build the container image (Containerfile) and run it for real with podman:
## alone, as deploy/kubernetes/'s Pod (podman kube play), and as two replicas behind Envoy
## (tests/deploy/; docs/operations.md, "Containers and Kubernetes"). As root: installs
## podman, runc and mmdebstrap with apt-get when missing and makes the base image once.
## About 5 minutes on 2 cores; it removes what it made, except the base image.
DEPLOY_PACKAGES := podman buildah runc mmdebstrap uidmap
deploy-test: $(STAMP)
	command -v podman >/dev/null && command -v runc >/dev/null && command -v mmdebstrap >/dev/null \
		|| (apt-get update && apt-get install -y $(DEPLOY_PACKAGES))
	timeout 1800 $(PY) -m pytest tests/deploy

## bench: throughput, latency and memory against the framework's ceilings (bench/README.md);
## about 15 minutes. Smaller: make bench BENCH_ARGS="--duration 2 --leads 1000,100000 --soak-minutes 0"
BENCH_ARGS ?= --duration 10 --leads 1000,1000000 --soak-minutes 10
bench: $(STAMP)
	command -v h2load >/dev/null || (apt-get update && apt-get install -y nghttp2-client)
	$(PY) -m bench $(BENCH_ARGS)

## soak: the crash test (tests/e2e/test_crash.py) with many more SIGKILLs, on both databases;
## about 4 minutes. SARAH_CRASH_KILLS sets the kills, SARAH_CRASH_SEED replays a run.
SARAH_CRASH_KILLS ?= 40
soak: $(STAMP)
	SARAH_CRASH_KILLS=$(SARAH_CRASH_KILLS) $(PY) -m pytest tests/e2e/test_crash.py -s

## fuzz: the hostile-input properties (tests/e2e/test_hostile_input.py) with 2,000 new examples
## each instead of 60, on both databases; about 10 minutes. SARAH_FUZZ_EXAMPLES sets the number.
SARAH_FUZZ_EXAMPLES ?= 2000
fuzz: $(STAMP)
	SARAH_FUZZ_EXAMPLES=$(SARAH_FUZZ_EXAMPLES) SARAH_FUZZ_RANDOM=1 $(PY) -m pytest \
		tests/e2e/test_hostile_input.py -k test_any_ --hypothesis-show-statistics

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
