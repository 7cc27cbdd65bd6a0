#!/usr/bin/env bash
# The parameter-efficiency frontier at paper scale on one CUDA machine, bf16: every method of paper.yaml's
# `frontier.rows` on Table 2's GLUE tasks (its metrics; paper.yaml `frontier.tasks.paper`), its seeds and held-out
# selection, first on BERT-large (the table's model, conf/experiment/frontier.yaml), then on RoBERTa-large (the
# override model=roberta-large, into its own output root, so neither skips the other's runs). Each finishes with
# table.md and frontier.md/.csv/.png in $OUT/<model>/frontier/paper-heldout/ (docs/REPRODUCE.md). Resumable: run
# it again and the finished runs are skipped. Not run yet: it is days of GPU time (8 tasks x 12 rows x 3 seeds
# per model, each on its method's own recipe).
#   scripts/gpu_frontier.sh                                   # both models, every row, from the hub
#   MODELS=bert-large METHODS=pasta,bitfit,lora TASKS=rte,mrpc scripts/gpu_frontier.sh   # a slice first
#   SELECTION=dev scripts/gpu_frontier.sh                     # the paper's protocol, into paper/ beside paper-heldout/
#   scripts/gpu_frontier.sh model.name_or_path=/models/x      # extra arguments: Hydra overrides for every run
# Environment: DATA_DIR (default ../shared/data), OUT (default outputs/gpu_frontier), PYTHON (default python3),
# MODELS (default "bert-large roberta-large"), METHODS, TASKS, SEEDS, SELECTION (default: paper.yaml `frontier`).
# A method not registered in pasta_cli.methods is refused in one line before anything runs: leave it out with METHODS.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DATA_DIR=${DATA_DIR:-../shared/data}
OUT=${OUT:-outputs/gpu_frontier}
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
opts=()
[ -n "${SEEDS:-}" ] && opts+=(--seeds "$SEEDS")
[ -n "${SELECTION:-}" ] && opts+=(--selection "$SELECTION")

"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; print(torch.cuda.get_device_name(0))"
status=0
for model in ${MODELS:-bert-large roberta-large}; do
  started=$(date +%s)
  "$PYTHON" -m pasta_cli.paper.reproduce frontier --scale paper --data-dir "$DATA_DIR" --methods "${METHODS:-}" \
    --tasks "${TASKS:-}" --output-root "$OUT/$model" "${opts[@]}" "model=$model" trainer.precision=bf16 "$@" \
    || status=$?
  echo "$model: wall time $(( $(date +%s) - started )) s; $OUT/$model/frontier/"
done
exit $status
