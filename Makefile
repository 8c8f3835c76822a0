# Development entry points. `make` builds and installs (editable) for development;
# `make test` runs every test; `make lint` runs clippy (warnings are errors), strict mypy
# on the package and stubtest of the extension's stub (python/ddprofiler/_native.pyi)
# against the built extension; `make run` runs the continuous profiler: to the Datadog
# Agent when one answers on localhost:8126, else into ./profiles (one pprof per service
# every 60 s) until Ctrl-C.
# The interpreter to install into: python3, unless it is a distribution's externally managed
# one (Debian 12's /usr/bin/python3 refuses `pip install`): then a virtual environment in
# .venv, made on first use. `make PYTHON=...` picks another.
PYTHON ?= $(shell python3 -c 'import os,sys,sysconfig; managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) and sys.prefix == sys.base_prefix; print(".venv/bin/python" if managed else "python3")' 2>/dev/null || echo python3)
# rustup installs cargo here; make's shell may not have it on PATH yet.
export PATH := $(HOME)/.cargo/bin:$(PATH)
APT_PACKAGES = clang-19 llvm-19 libbpf-dev linux-libc-dev bpftool linux-perf binutils gcc g++ make python3 python3-venv python3-pip util-linux openssl golang-1.19-go musl-tools nodejs gdb libpython3.11-dev chromium tmux curl ca-certificates

.PHONY: all deps install lint test test-rust test-wheel test-fuzz test-python run record wheel clean

all: install

# System packages the build (clang, libbpf headers) and the tests (perf, Debian's python3, a
# Go toolchain: Debian's golang-go unless one is on PATH) need, and a Rust toolchain (rustup's
# stable: Debian 12's rustc is older than the crates allow) when there is no cargo.
deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	  command -v go >/dev/null || [ -x /usr/local/go/bin/go ] || \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null; \
	else echo "make deps: run as root on Debian/Ubuntu, or install: $(APT_PACKAGES)"; fi
	@command -v cargo >/dev/null || curl -sSf https://sh.rustup.rs | sh -s -- -y -q --profile minimal --component clippy

.venv/bin/python:
	python3 -m venv .venv

install: $(if $(filter .venv/bin/python,$(PYTHON)),.venv/bin/python)
	$(PYTHON) -m pip install -q -e '.[test,lint]'

# mypy's settings are in pyproject.toml ([tool.mypy]); stubtest imports the installed
# extension, hence `install` first (which also installs the `lint` extra).
lint: install
	cargo clippy --workspace --all-targets -- -D warnings
	$(PYTHON) -m mypy
	$(PYTHON) -m mypy.stubtest ddprofiler._native

# pytest last: its summary is the run's closing line.
test: install test-rust test-wheel test-fuzz test-python

test-rust:
	cargo test -q -p ddprof-core

# The release wheel is one abi3 wheel that installs and runs on CPython 3.9.
test-wheel:
	PYTHON=$(PYTHON) scripts/check-wheel.sh

# A fixed-time fuzz of the ELF/DWARF entry points.
test-fuzz:
	FUZZ_SECONDS=$${FUZZ_SECONDS:-60} scripts/fuzz.sh

test-python:
	$(PYTHON) -m pytest -v tests

AGENT_URL ?= http://localhost:8126

run: install
	@if $(PYTHON) -c "import urllib.request,sys; urllib.request.urlopen('$(AGENT_URL)/info', timeout=2)" 2>/dev/null; then \
	  echo "ddprofiler: Agent found at $(AGENT_URL)"; \
	  exec $(PYTHON) -m ddprofiler --agent-url $(AGENT_URL); \
	else \
	  echo "ddprofiler: no Agent at $(AGENT_URL): writing profiles to ./profiles"; \
	  exec $(PYTHON) -m ddprofiler --output-dir profiles; \
	fi

record: install
	$(PYTHON) -m ddprofiler record --duration 10 --output profile.pprof

wheel:
	$(PYTHON) -m maturin build --release

clean:
	cargo clean
	rm -f python/ddprofiler/_native*.so
