# The two commands of the README: `make demo` and `make test`.
# Everything is installed into .venv; a torch that PYTHON already has (e.g. a CUDA build) is
# reused, otherwise the local CPU build torch==2.13.0 is installed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_FALLBACK ?= torch==2.13.0

.PHONY: install test test-gpu demo clean

# PYTHON's own packages are visible in the venv, also where PYTHON is itself a venv or a conda
# env (which --system-site-packages does not reach): its site-packages follow the venv's own.
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(PYTHON) -c "import site; print('\n'.join(site.getsitepackages()))" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/tracefield-parent-env.pth"
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_FALLBACK)"
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

# The CUDA path alone (tests marked gpu): bf16 against the fp32 reference, CUDA graphs, fused
# kernels, attention backends, the generator and `tracefield infer --device cuda`. Needs a GPU.
test-gpu: install
	$(PY) -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'make test-gpu needs a CUDA device (torch.cuda.is_available() is False)')"
	$(PY) -m pytest -q -m gpu

demo: install
	$(VENV)/bin/tracefield infer examples/synthetic --config small --output outputs/demo
	$(VENV)/bin/tracefield export outputs/demo/synthetic --format ati --output outputs/demo/exports \
		--prompt "Colourful toys tumble through a chequered room."
	@echo "Viewer on 127.0.0.1 (Ctrl-C to stop); from a laptop, use the ssh -L line it prints."
	$(VENV)/bin/tracefield view outputs/demo/synthetic

clean:
	rm -rf $(VENV) outputs build *.egg-info
