# make demo       : create .venv, install, run every task of the shipped pretrained model
#                   (pretrained/wvd_small) on a held-out synthetic image and a real photograph;
#                   without a shipped model, what make demo-train does.
# make demo-train : create .venv, install, train the demo model from scratch on the embedded
#                   synthetic world, sample.
# make test       : install the test requirements and run the whole suite.
VENV ?= .venv
WORKDIR ?= workdir/demo
PRETRAINED ?= pretrained/wvd_small
DEMO_OUTPUT ?= workdir/demo_pretrained
PYTEST_ARGS ?=
BIN := $(VENV)/bin

.PHONY: install install-test demo demo-train test clean peer

$(BIN)/.installed: requirements.txt pyproject.toml
	PY=$$(tools/find_python.sh) && $$PY -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

$(BIN)/.installed-test: $(BIN)/.installed requirements-test.txt
	$(BIN)/python -m pip install -q -r requirements-test.txt
	touch $@

install: $(BIN)/.installed
install-test: $(BIN)/.installed-test

# The shipped model (pretrained/wvd_small); without it (a clone that dropped it), the demo model is trained.
demo: install
	@if [ -f $(PRETRAINED)/manifest.json ]; then \
	  $(BIN)/python -m wvd_jax.tasks.demo --model=$(PRETRAINED) --output=$(DEMO_OUTPUT) && \
	  echo "Outputs: $(DEMO_OUTPUT)/{synthetic,photo}/ (depth PNGs, PLY point clouds, camera_control/video.mp4)"; \
	else \
	  echo "no shipped model at $(PRETRAINED): training the demo model instead (make demo-train)"; \
	  $(MAKE) --no-print-directory demo-train; \
	fi

demo-train: install
	$(BIN)/python -m wvd_jax.main --config=configs/demo.py --workdir=$(WORKDIR) --mode=train
	$(BIN)/python -m wvd_jax.main --config=configs/demo.py --workdir=$(WORKDIR) --mode=sample
	@echo "Outputs: $(WORKDIR)/samples (PNG grids, PLY point clouds), TensorBoard: $(WORKDIR)/tensorboard"

test: install-test
	$(BIN)/python -m pytest -q -n 2 $(PYTEST_ARGS) tests

clean:
	rm -rf $(VENV) workdir

# The PyTorch peer that benchmarks/vs_peer.py runs beside our train step, copied from the
# workspace into the ignored .peer/ (device calls send only the repository: carry .peer).
peer:
	mkdir -p .peer && cp ../shared/bench/peer_dit.py .peer/
