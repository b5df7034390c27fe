# `make test` builds the environment from nothing (about 2 minutes, 2.6 GB) and runs the suite.
VENV ?= .venv
PY := $(VENV)/bin/python
SEED ?= 0

.PHONY: test test-fast lint demo demo-stop bench generator readers clean-env chromium serve serve-bench

# the one install (scripts/install.sh, also run by docker/Dockerfile*): torch pinned first, the project with
# its dev extras under constraints.txt, then the torchvision shim where it is needed
$(VENV)/.installed: pyproject.toml constraints.txt scripts/install.sh scripts/install_torchvision_shim.py
	scripts/install.sh --venv $(VENV)
	touch $@

test: $(VENV)/.installed chromium lint
	$(PY) -m pytest -q

# the in-process tests under 3 s each (markers assigned in tests/conftest.py): about a minute
test-fast: $(VENV)/.installed
	@start=$$(date +%s); $(PY) -m pytest -q -m "unit and not slow"; rc=$$?; \
		echo "test-fast: $$(( $$(date +%s) - start )) s"; exit $$rc

# ruff (rules in pyproject.toml, over the whole tree) and basedpyright (basic mode, the six packages)
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/basedpyright

# the web-page test drives the system Chromium (Debian packages); as root, install them when missing
chromium:
	@if { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; } && [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; fi

# HTTP API and web page on 127.0.0.1:8000 (POLICY=runs/storyworld/policy.pt for the learned strategy)
serve: $(VENV)/.installed
	$(PY) -m serving --host 127.0.0.1 --port 8000 $(if $(POLICY),--policy $(POLICY))

serve-bench: $(VENV)/.installed
	$(PY) -m serving.bench --out results/serve_bench.json

# main job: local Ray head + MLflow on 127.0.0.1, the storyworld training via `ray job submit`
demo: $(VENV)/.installed
	PRESET=$(or $(PRESET),storyworld) scripts/demo.sh

demo-stop:
	-$(VENV)/bin/ray stop
	-pkill -f "mlflow server --host 127.0.0.1" || true

bench: $(VENV)/.installed
	$(PY) -m inflvg.bench --split heldout --seed $(SEED) --out results/bench.json

readers: $(VENV)/.installed
	$(PY) -m inflvg.world.readers_check --videos 64 --seed $(SEED) --out results/readers.json

# remakes the shipped weights in seven stages, about 130 minutes on 1 thread (see README, The generator);
# each stage is a preset of inflvg.generator.train (its RECIPE: every hyperparameter, the input and output paths)
GEN := $(PY) -m inflvg.generator.train --seed $(SEED)
generator: $(VENV)/.installed
	$(GEN) --preset text
	$(GEN) --preset scenes
	$(GEN) --preset recall
	$(GEN) --preset recall2
	$(GEN) --preset recall3
	$(GEN) --preset long
	$(GEN) --preset long2

clean-env:
	rm -rf $(VENV)
