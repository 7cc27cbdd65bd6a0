#!/usr/bin/env bash
# Multi-node without a scheduler: run this same line on every node (same HOST:PORT, same RUN_ID).
#   NNODES=2 GPUS=8 HOST=node0.example PORT=29500 RUN_ID=mnli-1 scripts/torchrun_multinode.sh task=mnli model=bert-large
set -euo pipefail
exec torchrun --nnodes "${NNODES:-2}" --nproc_per_node "${GPUS:-8}" \
  --rdzv-backend c10d --rdzv-endpoint "${HOST:?set HOST to the first node}:${PORT:-29500}" \
  --rdzv-id "${RUN_ID:-pasta}" -m pasta_cli.train "$@"
