# The verbs a user types. Every target sets itself up on a fresh machine (a venv in .venv).
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
SCALE   ?= cpu
DATA_DIR ?= ../shared/data
SEEDS   ?= 42
METHODS ?=
SELECTION ?= dev

.PHONY: install demo test test-fast bench bench-serve bench-serve-hostile reproduce-table2 reproduce-table3 reproduce-table4 reproduce-table5 reproduce-frontier clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch 2.13.0 CPU lies on this disk; an unpinned torch would download a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install  ## the main job on the embedded default: PASTA on the built-in task with MiniLM, offline
	HF_HUB_OFFLINE=1 $(VENV)/bin/pasta-train

test: install  ## lint first (a finding names file:line), the import layers (pyproject's importlinter), then the tests
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# the edit loop (under two minutes on 2 cores): the library, the data layer, metrics, files, adapters and mixed
# batches, on tiny models, the config compositions (recipes, Table 6, the documented keys), the run folder, the method
# registry and the import layers; no training run, no pasta-train process (those tests are marked slow). `make test`
# (everything) is still what CI runs.
FAST_TESTS := tests/test_pasta.py tests/test_adapter.py tests/test_multitask.py tests/test_packing.py \
	tests/test_optimiser.py tests/test_data.py tests/test_metrics.py tests/test_files.py tests/test_uncertainty.py \
	tests/test_method_doc.py tests/test_recipes.py tests/test_cli.py tests/test_run_folder.py tests/test_methods.py \
	tests/test_layers.py tests/test_precision_serving.py tests/test_peft_tuners.py tests/test_loreft.py tests/test_frontier.py
test-fast: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow and not fuzz" $(FAST_TESTS)

bench: install  ## every method's training step, timed in alternation (benchmarks/bench.py, docs/PERFORMANCE.md)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench.py run --output outputs/bench/bench.json

bench-serve: install  ## 8 tasks on one MiniLM: mixed batches vs one model, 8 models, swapping; HTTP latency and load (docs/DEPLOY.md)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/serve_bench.py run --output outputs/bench/serve.json

bench-serve-hostile: install  ## 16 clients for 2 minutes, one hostile: every good answer 200 and equal to pasta-predict's (docs/DEPLOY.md)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/serve_hostile.py --output outputs/bench/serve_hostile.json

# make reproduce-table4 [SCALE=paper|cpu|smoke] [DATA_DIR=../shared/data] [SEEDS=42,43,44] [VARIANTS=full,shared]
#                      [TASKS=rte,cola] [METHODS=full_ft,bitfit,lora,prefix,adapter,diff_prune] [LOGGER=wandb]
#                      [SELECTION=heldout] [JOBS=2]   (docs/REPRODUCE.md)
# pasta-reproduce runs the table's missing cells (one Hydra multirun per task column of experiment=table<N>,
# fixed sweep dirs outputs/<table>/<scale>/<task>: a re-run skips what finished), then writes
# outputs/<table>/<scale>/table.md and table.csv beside the paper's numbers (pasta_cli/paper.yaml).
reproduce-table2 reproduce-table3 reproduce-table4 reproduce-table5: reproduce-table%: install
	$(VENV)/bin/pasta-reproduce table$* --scale "$(SCALE)" --data-dir "$(DATA_DIR)" --seeds "$(SEEDS)" \
		--methods "$(METHODS)" --variants "$(VARIANTS)" --tasks "$(TASKS)" --logger "$(LOGGER)" \
		--selection "$(SELECTION)" $(if $(JOBS),--jobs "$(JOBS)")

# make reproduce-frontier [SCALE=cpu|paper|smoke] [METHODS=pasta,bitfit,...] [SEEDS=42] [TASKS=sst2] [SELECTION=dev]
# every method on the scale's tasks under one protocol (paper.yaml `frontier`: its rows, tasks, seeds and held-out
# selection, unless given here), then table.md and frontier.md/.csv/.png in outputs/frontier/<scale>-heldout/
# (docs/REPRODUCE.md). SEEDS and SELECTION pass only when given: their defaults here are the paper tables'.
reproduce-frontier: install
	$(VENV)/bin/pasta-reproduce frontier --scale "$(SCALE)" --data-dir "$(DATA_DIR)" --methods "$(METHODS)" \
		--tasks "$(TASKS)" --logger "$(LOGGER)" $(if $(filter-out file,$(origin SEEDS)),--seeds "$(SEEDS)") \
		$(if $(filter-out file,$(origin SELECTION)),--selection "$(SELECTION)") $(if $(JOBS),--jobs "$(JOBS)")

clean:
	rm -rf $(VENV) .pytest_cache
