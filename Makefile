# SimScale-Gym: the two commands of the README.
#   make demo   install into .venv, build the embedded mini dataset if missing, run the main job
#   make test   install into .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SIMSCALE_CACHE ?= $(CURDIR)/.cache
export SIMSCALE_CACHE
# the checkout's .cache/mini by default: a plain gym.make("SimScale-navhard-v0") in a script run with this .venv finds
# it too (resolution order: README "Where the data is found", simscale_env/data/paths.py)
MINI := $(SIMSCALE_CACHE)/mini
# numba compiles kernels once and keeps them on disk
export NUMBA_CACHE_DIR ?= $(SIMSCALE_CACHE)/numba

.PHONY: demo test install mini bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=23.1"
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

mini: install
	$(VENV)/bin/simscale data build-mini --out $(MINI) --if-missing

demo: mini
	$(VENV)/bin/simscale demo --data $(MINI) --out $(SIMSCALE_CACHE)/demo

test: mini
	SIMSCALE_MINI=$(MINI) $(PY) -m pytest -x -q --durations=25

bench: mini
	$(VENV)/bin/simscale bench data --data $(MINI)

clean:
	rm -rf $(VENV) $(SIMSCALE_CACHE) .pytest_cache
