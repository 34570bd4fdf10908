# The two commands for a fresh machine:
#   make run    set up, build, start a node with demo tickets, show them (Ctrl-C stops it)
#   make test   set up, build, run every test (Swift unit tests, then real-process tests)
SHELL := /bin/bash
SWIFT ?= swift
EKC := .build/debug/ekc
DEB_PACKAGES := liblmdb-dev lmdb-utils nghttp2-client curl openssl pkg-config python3 protobuf-compiler
PY_MODULES := pytest jsonschema openapi_spec_validator yaml schemathesis google.protobuf h2 cryptography lmdb

.PHONY: all deps build build-tests run single cluster demo test test-swift test-integration faults faults-short faults-regressions upgrade-test bench clean

all: build

# Debian packages, installed only when missing (apt-get update runs only then).
deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@missing=""; for m in $(PY_MODULES); do python3 -c "import $$m" 2>/dev/null || missing="$$missing $$m"; done; \
	if [ -n "$$missing" ]; then \
	  pkgs=$$(echo $$missing | sed 's/openapi_spec_validator/openapi-spec-validator/; s/\byaml\b/PyYAML/; s/google.protobuf/protobuf/'); \
	  echo "installing Python packages: $$pkgs"; python3 -m pip install -q $$pkgs; \
	fi

build: deps
	$(SWIFT) build --product ekc

build-tests: deps
	$(SWIFT) build --build-tests

# The local development federation: two regions (one with a remote office) and two
# funds as real processes over mutual TLS; region 38 hands a request to the pension fund.
run: build
	ops/run-federation.sh

# The embedded default: one standalone node with demo tickets.
single: build
	ops/run-demo.sh

# Three nodes of one region replicating over mutual TLS.
cluster: build
	ops/run-cluster.sh

# Like `run` and `single`, but stopping the nodes after the demo (for scripts).
demo: build
	DEMO_EXIT=1 ops/run-federation.sh
	DEMO_EXIT=1 ops/run-demo.sh

test: build-tests
	$(SWIFT) test --skip-build
	$(SWIFT) build --product ekc
	python3 -m pytest -q -p no:cacheprovider tests/integration
	$(MAKE) faults-short
	$(MAKE) upgrade-test

test-swift: build-tests
	$(SWIFT) test --skip-build

test-integration: build
	python3 -m pytest -q -p no:cacheprovider tests/integration

# Seeded faults on real node processes (tests/faults/run.py): partitions, one-way cuts,
# blackholes, kill -9, SIGSTOP, ±10 min clock jumps, a full disk, restarts; then a
# check that nothing acknowledged is lost. SEEDS=n runs seeds 1..n (BASE=k starts at k,
# BASE=random picks one), SEED=n one seed, FAULT_SECONDS per seed (120), KEEP=1 keeps
# every seed's files in tests/faults/runs/ (a failing seed's are always kept).
# EKC_BIN=PATH runs that node binary instead of building one.
FAULT_SECONDS ?= 120
FAULTS_BUILD = $(if $(EKC_BIN),,build)
faults: $(FAULTS_BUILD)
	python3 tests/faults/run.py $(if $(SEED),--seed $(SEED),--seeds $(or $(SEEDS),20) $(if $(BASE),--base $(BASE))) \
	  --seconds $(FAULT_SECONDS) $(if $(KEEP),--keep)

# A rolling upgrade under load (issue 19): the previous release (tests/upgrade/releases.txt)
# is built once from its commit into .build-upgrade/ (a few minutes, cold); a fault run then
# starts four nodes on it (one of each fund's two, region 38's office, all of region 52)
# and the rest on this build, with 30 paced creates/s beside the workload's mix and the
# network faults, upgrades them one at a time (SIGTERM, start this build on the same
# store), and checks as every fault run does, and that every node ends on this build.
UPGRADE_SEED ?= 2001
UPGRADE_SECONDS ?= 150
upgrade-test: $(FAULTS_BUILD)
	previous=$$(tests/upgrade/build-release.sh) && \
	python3 tests/faults/run.py --seed $(UPGRADE_SEED) --seconds $(UPGRADE_SECONDS) --creates-per-second 30 \
	  --upgrade-from "$$previous" $(if $(EKC_BIN),--bin $(EKC_BIN)) $(if $(KEEP),--keep)

# The short version `make test` runs: seeds 1001 and 1002, 70 s each (fewer operations than
# the full runs; a failing one is rerun with make faults SEED=1001 FAULT_SECONDS=70).
faults-short: $(FAULTS_BUILD)
	@echo "fault runs, short version: 2 seeds x 70 s (make faults SEEDS=20 for the full runs)"
	python3 tests/faults/run.py --seeds 2 --base 1001 --seconds 70 $(if $(KEEP),--keep)

# The seeds that once found a bug (tests/faults/regressions.txt: seed, seconds, the rule it
# broke), each run as it was listed.
faults-regressions: $(FAULTS_BUILD)
	python3 tests/faults/run.py --regressions $(if $(KEEP),--keep)

# kill -9 at random moments of a steady load (tests/faults/kill9.py): a region's two nodes
# and the pension fund; after every kill mdb_stat reads the killed node's store; at the end
# every acknowledged create, edit, note, transfer and step is checked on every node entitled
# to it. KILLS (100), SEED (random, printed); a failing seed keeps tests/faults/runs/kill9-SEED/.
# The short version (8 kills) is tests/integration/test_kill9_under_load.py, in make test.
.PHONY: kill9
KILLS ?= 100
kill9: build
	python3 tests/faults/kill9.py --kills $(KILLS) $(if $(SEED),--seed $(SEED)) $(if $(KEEP),--keep)

# Release build in its own folder, then store and API benchmarks printing figures.
bench: deps
	$(SWIFT) build -c release --scratch-path .build-release --product ekc
	$(SWIFT) build -c release --scratch-path .build-release --product ekc-bench
	ops/bench.sh .build-release/release

# Coverage-guided fuzzing (libFuzzer, address sanitizer, leaks detected) of what a stranger
# can send a node: request bodies and queries (json), a peer's frames (frame), a damaged
# store's values (store), bearer tokens and key files (token), a peer's answers to
# anti-entropy calls (answers). Each target in turn for
# FUZZ_SECONDS; findings go to fuzz/artifacts/TARGET/; fails if any target failed.
# One target: fuzz/run.sh TARGET SECONDS. `make test` replays fuzz/corpus/ without a sanitizer.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= json frame store token answers
fuzz: deps
	fuzz/run.sh build
	@failed=""; for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	  fuzz/run.sh $$t $(FUZZ_SECONDS) || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz targets failed:$$failed (see fuzz/artifacts/)"; exit 1; fi

clean:
	rm -rf .build .build-release .ekc
