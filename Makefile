# bnlab — `make run` trains the deep-network experiment, draws its figures and writes the report
# (results/report.html); `make test` tests.
# Every target that needs the virtual environment creates it on demand.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Beside the shared folder of this project's machines the data is already there; elsewhere
# bnlab uses $BNLAB_DATA_DIR or its cache folder, downloading CIFAR-10 on first use.
SHARED_DATA := $(abspath ../shared/datasets)
ifneq ($(wildcard $(SHARED_DATA)/cifar-10-batches-py),)
export BNLAB_DATA_DIR ?= $(SHARED_DATA)
endif

.PHONY: install docs test test-fast test-kernels reference-hashes readme lint run gradcheck bench experiments claims clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,dask]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

# The documentation site into site/: the reference pages written from the code (tools/docs.py),
# the notebook executed, every link and anchor checked (--strict: a warning fails the build).
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(BIN)/python tools/docs.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Everything but the tests marked slow (tests/conftest.py): under a minute, for the edit-test loop.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# The numerics-sensitive tests and `bnlab gradcheck` under each OpenBLAS kernel set, portable
# numerics off (BNLAB_BLAS=native): they must pass whatever kernels a machine picks.
KERNELS := Haswell SkylakeX Sandybridge Prescott
NUMERIC_TESTS := tests/test_layers.py tests/test_conv.py tests/test_nets.py tests/test_solver.py \
	tests/test_optim.py tests/test_gradcheck_suite.py tests/test_notebook_cells.py tests/test_probes.py \
	tests/test_noisy_batchnorm.py tests/test_ghost_batchnorm.py tests/test_fused.py
# A set this CPU cannot execute (SkylakeX without AVX-512) is replaced by the next one down that it
# can (tools/kernels.py says which, on stderr): forcing it would kill the process.
test-kernels: $(STAMP)
	@kernels=$$($(BIN)/python tools/kernels.py $(KERNELS)) || exit 1; \
	for kernel in $$kernels; do \
		echo "== BNLAB_BLAS=native OPENBLAS_CORETYPE=$$kernel"; \
		BNLAB_BLAS=native OPENBLAS_CORETYPE=$$kernel $(BIN)/python -m pytest -q -p no:cacheprovider $(NUMERIC_TESTS) \
			|| exit 1; \
		table=$$(BNLAB_BLAS=native OPENBLAS_CORETYPE=$$kernel $(BIN)/bnlab gradcheck) \
			|| { echo "$$table" | grep FAIL; exit 1; }; \
		echo "$$table" | tail -1; \
	done

# Regenerate tests/smoke_history.sha256 ON PURPOSE (numerics, data or configs/smoke.yaml changed);
# never to make test_numerics pass.
reference-hashes: $(STAMP)
	$(BIN)/python tests/reference_hashes.py

# Rebuild the README's generated blocks (<!-- bnlab:NAME --> ... <!-- /bnlab:NAME -->) and its
# figures from results/ (run `make experiments` first).
readme: $(STAMP)
	$(BIN)/bnlab plot results/
	$(BIN)/python tools/readme.py

# ruff, and pylint's duplicate-code check: no run of 4+ similar lines twice in bnlab/ (imports,
# signatures and docstrings aside).
lint: $(STAMP)
	$(BIN)/ruff check bnlab tests
	$(BIN)/pylint --disable=all --enable=duplicate-code --min-similarity-lines=4 bnlab

run: $(STAMP)
	$(BIN)/bnlab run configs/deep_bn.yaml
	$(BIN)/bnlab plot results/deep_bn
	$(BIN)/bnlab report results/

experiments: $(STAMP)
	$(BIN)/bnlab run configs/deep_bn.yaml configs/weight_scale.yaml configs/batch_size.yaml \
		configs/layernorm_batch_size.yaml configs/norm_batch_size.yaml configs/cnn_norm.yaml \
		configs/santurkar.yaml configs/bn_paper_fig1.yaml configs/bn_paper_mnist.yaml configs/lenet_bn.yaml \
		configs/init_depth.yaml configs/resnet_norm.yaml configs/weight_decay.yaml \
		configs/norm_placement.yaml configs/ws_depth.yaml configs/variance_shift.yaml
	$(BIN)/bnlab run configs/deep_bn.yaml --set data.dataset=mnist --set name=deep_bn_mnist
	$(BIN)/bnlab run configs/weight_scale.yaml --set data.dataset=mnist --set name=weight_scale_mnist
	$(BIN)/bnlab plot results/
	$(BIN)/bnlab report results/

claims: $(STAMP)
	$(BIN)/bnlab run configs/finetune_pretrain.yaml --workers 2  # the fine-tuning claims start from it
	$(BIN)/bnlab claims --workers 2

gradcheck: $(STAMP)
	$(BIN)/bnlab gradcheck

bench: $(STAMP)
	$(BIN)/bnlab bench --save results/bench.json  # the speed page is generated from it (make readme)

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache .ruff_cache .hypothesis
	find results -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
