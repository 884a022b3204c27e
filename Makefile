# One-command set-up: `make demo` and `make test` create/refresh the virtual environment,
# install torch first (the local CPU build), then everything else from the pinned constraints,
# and fetch the third-party weights (checksummed, cached outside the repo). Re-runs are no-ops.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.lightfer-installed
TORCH  := torch==2.13.0

.PHONY: setup weights browser test demo benchmark clean
setup: $(STAMP) weights

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements/constraints.txt -e ".[serve,dev]"
	touch $@

weights: $(STAMP)
	$(PY) -m lightfer.assets fetch

# Debian chromium for the web page's browser test (skipped with a message where apt is unavailable).
browser:
	bash scripts/install_browser.sh

test: setup browser
	$(PY) -m pytest -q

demo: setup
	$(VENV)/bin/lightfer predict examples/group.jpg --json out/demo/group.json --save-dir out/demo
	@echo "wrote out/demo/group.json and the annotated out/demo/group.jpg"

benchmark: setup
	$(VENV)/bin/lightfer benchmark

clean:
	rm -rf $(VENV) out
