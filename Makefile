# Two commands on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp

.PHONY: demo test test-all bench clean

# torch first, pinned to the local CPU build: an open range would pull several GB of CUDA packages.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

# The reader tests look at the report in headless Chromium and the PDF through pdftoppm.
# Installed when missing and we may (root with apt); otherwise those tests skip and say why.
TOOLS = $(VENV)/.reader-tools-stamp
$(TOOLS): $(STAMP)
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v pdftoppm >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium and poppler-utils for the reader tests..."; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium poppler-utils) >/dev/null 2>&1 \
	      || echo "note: could not install chromium/poppler-utils: the reader tests will be skipped"; \
	  else echo "note: chromium/poppler-utils missing: the reader tests will be skipped"; fi; \
	fi
	@touch $@

demo: $(STAMP)
	$(BIN)/xai-audit demo --out xai-audit-report

test: $(STAMP) $(TOOLS)
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(STAMP) $(TOOLS)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .xai-audit-cache xai-audit-report build *.egg-info
