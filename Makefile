# Every target bootstraps .venv when it is missing (fresh clone, CI).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test quickstart clean mcu-check mcu-check-full chromium

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: these wheels lie on the build machines' local disk.
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev,demo]'
	touch $@

venv: $(STAMP)

# The suite, then the engine on emulated microcontrollers against the host engine (issue 7:
# it runs in CI), then 60 seconds of fuzzing the engine's loader and forward pass (libFuzzer).
# The Debian toolchains, clang for the fuzzer and Chromium are installed first when missing (root
# or sudo; ~20 s each from the mirror), so the QEMU test and the demo's browser test run too.
test: $(STAMP) chromium
	$(MAKE) -C engine/ports deps
	$(BIN)/python -m pytest -q
	$(BIN)/python engine/ports/mcu_check.py
	$(MAKE) -C engine fuzz-deps
	$(MAKE) -C engine -j$$(nproc) build/fuzz/fuzz_load
	$(MAKE) -C engine fuzz FUZZ_SECONDS=60 PYTHON=$(abspath $(BIN)/python)

quickstart: $(STAMP)
	$(BIN)/ftervit quickstart --out runs/quickstart

# The engine on emulated microcontrollers (QEMU) against the host engine: docs/mcu.md.
# Installs the Debian toolchains first when missing (needs root or sudo).
mcu-check: $(STAMP)
	$(MAKE) -C engine/ports deps
	$(BIN)/python engine/ports/mcu_check.py

mcu-check-full: $(STAMP)
	$(MAKE) -C engine/ports deps
	$(BIN)/python engine/ports/mcu_check.py --full

# Debian's Chromium for the demo's end-to-end test (tests/test_demo.py drives it with Playwright;
# Playwright's own browser download is never used).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); echo "installing: chromium"; \
	  $$sudo apt-get update -q && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
