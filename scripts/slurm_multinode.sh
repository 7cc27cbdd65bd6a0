#!/usr/bin/env bash
# Multi-node PASTA training under SLURM: one torchrun launcher per node, c10d rendezvous on the first node.
# All ranks write into ONE run folder (rank 0 picks its name and broadcasts it); rank 0 alone logs and saves.
#
#   sbatch scripts/slurm_multinode.sh task=mnli model=bert-large logger=wandb
#
#SBATCH --job-name=pasta
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1          # one launcher per node; torchrun starts one process per GPU
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=16
#SBATCH --time=12:00:00
#SBATCH --output=outputs/slurm/%x-%j.out
set -euo pipefail

GPUS_PER_NODE=${GPUS_PER_NODE:-8}
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
PORT=${PORT:-29500}

srun torchrun \
  --nnodes "$SLURM_NNODES" \
  --nproc_per_node "$GPUS_PER_NODE" \
  --rdzv-backend c10d \
  --rdzv-endpoint "$HEAD_NODE:$PORT" \
  --rdzv-id "$SLURM_JOB_ID" \
  -m pasta_cli.train "$@"
