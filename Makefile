# The two commands of the README are `make demo` and `make test`; each
# installs what it needs first (hack/setup.sh).
SHELL := /bin/bash
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.build/collections
export PYTHONPATH := $(CURDIR)/.build/collections:$(CURDIR)/tests
export PATH := $(CURDIR)/.venv/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: setup demo test sanity lint unit integration lab-tests bench lab-up lab-down lab-status clean

setup:
	@hack/setup.sh

demo: setup
	@hack/demo.sh

test: setup
	@hack/test.sh

sanity: setup
	@hack/sanity.sh

lint: setup
	ansible-lint

unit: setup
	pytest tests/unit

integration: setup
	pytest tests/integration

# Tests of the embedded lab itself (tests/kmodlab), apart from the product's.
lab-tests: setup
	pytest tests/lab

# The fleet benchmark: one table, written to docs/performance.md (hack/bench.sh).
# make bench BENCH_ARGS='--quick' for a smoke run.
bench: setup
	@hack/bench.sh $(BENCH_ARGS)

# make lab-up LAB_ARGS='--clusters 1 --cluster-releases 4.12.77 --node-mode fast'
# then: python -m kmodlab upgrade lab-a --to 4.16.30 --wait (see tests/kmodlab/README.md, Upgrades)
lab-up: setup
	python -m kmodlab up $(LAB_ARGS)

lab-down: setup
	python -m kmodlab down

lab-status: setup
	python -m kmodlab status

clean: lab-down
	rm -rf .build .lab tests/output
