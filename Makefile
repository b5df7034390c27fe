# `make test` builds the environment from nothing (about 2 minutes, 2.6 GB) and runs the suite.
VENV ?= .venv
PY := $(VENV)/bin/python
SEED ?= 0

.PHONY: test demo demo-stop bench generator readers clean-env chromium serve serve-bench

$(VENV)/.installed: pyproject.toml constraints.txt scripts/install_torchvision_shim.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: it resolves to the local CPU wheel where there is one
	$(PY) -m pip install -q torch==2.13.0
	DS_BUILD_OPS=0 $(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	# only where torchvision's CUDA wheel meets CPU torch; a no-op elsewhere
	$(PY) scripts/install_torchvision_shim.py
	touch $@

test: $(VENV)/.installed chromium
	$(PY) -m pytest -q

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

# remakes the shipped weights in five stages, about 90 minutes on 1 thread (see README, The generator)
GEN := $(PY) -m inflvg.generator.train --threads 1 --minutes 120
generator: $(VENV)/.installed
	$(GEN) --seed $(SEED) --lr 1.5e-3 --text-steps 800 --max-steps 800 --decay-steps 3000 --out runs/generator/text.pt
	$(GEN) --seed $(SEED) --lr 1.5e-3 --max-steps 2400 --decay-steps 2200 \
	  --target-shares 0.5,0.2,0.3 --long-shares 0.65,0.15,0.1,0.1 --init runs/generator/text.pt --out runs/generator/scenes.pt
	$(GEN) --seed $$(( $(SEED) + 1 )) --lr 1e-3 --warmup-steps 30 --max-steps 2800 --decay-steps 400 \
	  --target-shares 0.7,0.15,0.15 --long-shares 0.85,0.05,0.05,0.05 --init runs/generator/scenes.pt --out runs/generator/recall.pt
	$(GEN) --seed $$(( $(SEED) + 2 )) --lr 5e-4 --warmup-steps 30 --max-steps 3200 --decay-steps 400 \
	  --target-shares 0.7,0.15,0.15 --long-shares 0.85,0.05,0.05,0.05 --init runs/generator/recall.pt --out runs/generator/recall2.pt
	$(GEN) --seed $$(( $(SEED) + 3 )) --lr 5e-4 --warmup-steps 30 --max-steps 3600 --decay-steps 400 \
	  --target-shares 0.7,0.15,0.15 --long-shares 0.85,0.05,0.05,0.05 --init runs/generator/recall2.pt --out inflvg/weights/generator.pt

clean-env:
	rm -rf $(VENV)
