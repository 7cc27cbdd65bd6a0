#!/usr/bin/env bash
# Table 4's RTE column at paper scale on one CUDA machine, bf16: every variant of PASTA on BERT-large for the
# paper's 150 epochs (Table 6), then each run's seconds per epoch, to set beside the paper's "about 3 hours
# per task on one GPU". It is pasta-reproduce itself (docs/REPRODUCE.md), restricted to RTE:
#   scripts/gpu_table4_rte.sh                                   # bert-large from the hub
#   scripts/gpu_table4_rte.sh model.name_or_path=/models/bert-large-uncased   # a local copy (offline machines)
#   EPOCHS=3 VARIANTS=full scripts/gpu_table4_rte.sh           # a short look at the per-epoch time only
# Environment: DATA_DIR (default ../shared/data), OUT (default outputs/gpu_table4_rte), PYTHON (default python3),
# SEEDS (default 42), EPOCHS (default: Table 6's 150), VARIANTS (default all five). Extra arguments are Hydra
# overrides for every run. GPUs: every visible one (torchrun), as pasta-reproduce does at scale paper.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DATA_DIR=${DATA_DIR:-../shared/data}
OUT=${OUT:-outputs/gpu_table4_rte}
extra=("$@")
[ -n "${EPOCHS:-}" ] && extra+=("trainer.epochs=$EPOCHS")
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; print(torch.cuda.get_device_name(0))"
started=$(date +%s)
"$PYTHON" -m pasta_cli.paper.reproduce table4 --scale paper --tasks rte --data-dir "$DATA_DIR" \
  --seeds "${SEEDS:-42}" --variants "${VARIANTS:-}" --output-root "$OUT" trainer.precision=bf16 "${extra[@]}" || true
echo "wall time: $(( $(date +%s) - started )) s"

# seconds per epoch of each run: the wall clock of its evaluations (metrics.jsonl wall_s), one per epoch
"$PYTHON" - "$OUT" <<'EOF'
import json, statistics, sys
from pathlib import Path
for results in sorted(Path(sys.argv[1]).rglob("results.json")):
    r = json.loads(results.read_text())
    walls = [json.loads(l)["wall_s"] for l in (results.parent / "metrics.jsonl").read_text().splitlines()]
    per_epoch = [b - a for a, b in zip([0.0, *walls], walls)]
    print(f"{results.parent.name}: {len(per_epoch)} epochs, median {statistics.median(per_epoch):.1f} s/epoch, "
          f"{r['wall_time_s'] / 3600:.2f} h in all, best accuracy {100 * r['best_score']:.1f} at epoch {r['best_epoch']}, "
          f"{r['devices']} GPU(s), {r['precision']}")
EOF
