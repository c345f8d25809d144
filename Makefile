# tractor: the short verbs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# One target dir outside the checkout, so fresh clones (CI) reuse compiled dependencies.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/tractor/target
CARGO ?= cargo

include tests/cluster/cluster.mk

.PHONY: help build test test-unit lint fmt crds demo bench-operator

## help: list the verbs
help:
	@grep -hE '^## ' $(MAKEFILE_LIST) | sed 's/^## /  make /'

## build: build the tractor binary (debug)
build:
	$(CARGO) build --locked -p tractor

## test: every test: unit tests, then the end-to-end tests on a local cluster (started if none is up, stopped after)
test: cluster-build
	scripts/test.sh

## test-unit: unit tests only (no cluster)
test-unit:
	$(CARGO) test --locked --workspace --exclude tractor-e2e

## lint: formatting, clippy with warnings as errors, and no one-letter names in functions over 30 lines
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	python3 scripts/one-letter-names.py $$(git ls-files '*.rs')

## fmt: format the code
fmt:
	$(CARGO) fmt --all

## crds: regenerate crds/modeldeployment.yaml from the API types (and its copies in the chart and manifests/)
crds:
	$(CARGO) run --locked -q -p tractor -- crd > crds/modeldeployment.yaml
	scripts/gen-install.sh

.PHONY: install-manifests
## install-manifests: regenerate charts/tractor/crds/ and manifests/ from crds/ and the chart (a test checks them)
install-manifests:
	scripts/gen-install.sh

## demo: cluster + real node, image, CRD, operator, the digits example; prints a prediction (leaves it running)
demo:
	scripts/demo.sh

.PHONY: image
## image: the tractor image as an OCI archive, built without a container engine (release binary); see Dockerfile
image:
	scripts/image.sh

## bench-operator: 1000 ModelDeployments on KWOK vs 1000 plain Deployments; writes bench/operator.md (BENCH_N to change)
bench-operator: cluster-build
	scripts/bench-operator.sh

.PHONY: bench-serve
## bench-serve: raw tract vs tractor serve over loopback (REST JSON/binary, gRPC); report in $(CARGO_TARGET_DIR)/bench-serve/
bench-serve:
	$(CARGO) build --locked --release -p tractor
	$(CARGO) run --locked --release -q -p tractor-serve --example bench_serve -- --bin $(CARGO_TARGET_DIR)/release/tractor --out $(CARGO_TARGET_DIR)/bench-serve

.PHONY: bench bench-quick
## bench: tractor vs KServe, MLServer, BentoML and Ray Serve on the same models, pinned core and load (wrk, vegeta, ghz); writes docs/bench/REPORT.md and its plots
bench:
	scripts/bench.sh

## bench-quick: the same at 2 s a cell and one start per server (~10 min once the peers' venvs are installed)
bench-quick:
	scripts/bench.sh --quick

.PHONY: bench-payload-log
## bench-payload-log: tractor serve with payload logging off, to a fast sink and to a hanging sink (wrk closed loop, vegeta fixed rate); writes docs/bench/PAYLOAD-LOG.md
bench-payload-log:
	scripts/bench-payload-log.sh

.PHONY: bench-optimize
## bench-optimize: latency (batch 1, 32), size and score per fixture and precision, and auto's choice; report in $(CARGO_TARGET_DIR)/bench-optimize/
bench-optimize:
	$(CARGO) build --locked --release -p tractor
	scripts/bench-optimize.sh

.PHONY: bench-coldstart
## bench-coldstart: process start -> ready (tractor vs KServe's ModelServer) and pod created -> Ready (artifact store vs re-derivation), small and ~100 MB models; report in $(CARGO_TARGET_DIR)/bench-coldstart/
bench-coldstart: cluster-build
	scripts/bench-coldstart.sh

.PHONY: bench-autoscale
## bench-autoscale: load step -> scale decision (BENCH_CYCLES, 3) and scale changes in a noisy-but-flat run (BENCH_NOISE_SECS, 600) on the local cluster; report in $(CARGO_TARGET_DIR)/bench-autoscale/
bench-autoscale: cluster-build
	scripts/bench-autoscale.sh
