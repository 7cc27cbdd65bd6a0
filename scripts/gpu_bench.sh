#!/usr/bin/env bash
# PASTA on BERT-large, one GPU (an H100: one run of under 8 minutes): RTE-shaped batches (batch 32,
# length 128, the pair template), bf16 autocast, SDPA attention, next to full fine-tuning (plus the
# floor, BitFit and LoRA, so the CPU targets can be read on the GPU too). Prints examples/s per method
# and the projected wall time of the paper's RTE run: 2490 train examples x 150 epochs / examples/s,
# plus 277 dev examples per epoch at the inference rate.
#
# The GPU machines have no internet: BERT-large is *randomly initialised* from a BertConfig of
# bert-large's shape (24 layers, hidden 1024, 16 heads, FFN 4096, vocabulary 30522). Speed and memory
# do not depend on the weights' values. Set MODEL=/path/to/bert-large-uncased to time real weights.
#
# Everything goes through pasta-bench's options; results: $OUT/gpu_bert_large.json and .md
# (OUT defaults to outputs/bench). Environment: PYTHON (default python3) when pasta-bench is not
# installed, RTE_DIR (default ../shared/data/glue/RTE) for the whole-epoch comparison (skipped with a
# message where absent), STEPS/ROUNDS to shorten or lengthen the timing.
# A dry run of this very script on a CPU (checks the flags and the code path, not the GPU):
#   DEVICE=cpu MODEL_CONFIG=tiny BATCH=4 SEQ_LEN=16 ROUNDS=1 STEPS=1 OUT=/tmp/gpu_dry scripts/gpu_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/bench}
mkdir -p "$OUT"

if [ -n "${PASTA_BENCH:-}" ]; then
  read -r -a BENCH <<< "$PASTA_BENCH"
elif command -v pasta-bench >/dev/null 2>&1; then
  BENCH=(pasta-bench)
else
  BENCH=("${PYTHON:-python3}" -m pasta_cli.bench)
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
if [ -n "${MODEL:-}" ]; then
  MODEL_ARGS=(--model "$MODEL")
else
  MODEL_ARGS=(--model-config "${MODEL_CONFIG:-bert-large}")
fi

# ~7 models of 1.3 GB on the GPU at once; 7 memory children (a fresh interpreter each: CUDA cannot be
# forked), ~15 s apiece. timeout keeps the whole run under 8 minutes even on a slow start.
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
timeout --signal=INT 460 "${BENCH[@]}" \
  --device "${DEVICE:-cuda}" --precision bf16 --attn sdpa "${MODEL_ARGS[@]}" \
  --methods pasta,full_ft,floor,bitfit,lora \
  --batch-size "${BATCH:-32}" --seq-len "${SEQ_LEN:-128}" \
  --warmup "${WARMUP:-5}" --rounds "${ROUNDS:-6}" --steps "${STEPS:-10}" \
  --memory spawn --memory-steps 3 \
  --profile pasta \
  --epoch --data-dir "${RTE_DIR:-../shared/data/glue/RTE}" \
  --project-epochs 150 \
  --output "$OUT/gpu_bert_large.json"
