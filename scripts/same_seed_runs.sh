#!/usr/bin/env bash
# Same-seed runs that must give identical dev numbers before and after a refactor (docs/ARCHITECTURE.md):
# the built-in default, an RTE subset, BitFit 30 steps, STS-B, CoNLL-2003, CoLA, and a few steps of every other
# method. Usage: [BEFORE=old/same_seed.json] scripts/same_seed_runs.sh OUT_DIR [PYTHON]; writes OUT_DIR/same_seed.json
# (run -> best dev scores and every evaluation's train loss, lr and scores); with BEFORE, exits 1 unless all are equal.
set -euo pipefail
out=${1:?usage: scripts/same_seed_runs.sh OUT_DIR [PYTHON]}
py=${2:-.venv/bin/python}
data=${DATA_DIR:-../shared/data}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1
common="trainer.progress=false seed=42"
sub="task.data_dir=$data/glue/RTE task.max_train_samples=256 task.max_eval_samples=128 trainer.max_steps=30"
run() {  # name, overrides...
  local name=$1; shift
  [ -f "$out/$name/results.json" ] || $py -m pasta_cli.train $common "$@" hydra.run.dir="$out/$name" >"$out/$name.log" 2>&1
}
mkdir -p "$out"
run builtin
run rte_pasta task=rte $sub
run rte_bitfit task=rte method=bitfit $sub
run stsb task=stsb task.data_dir=$data/glue/STS-B task.max_train_samples=256 task.max_eval_samples=128 trainer.max_steps=30
run conll task=conll2003 task.data_dir=$data/conll2003 task.max_train_samples=256 task.max_eval_samples=128 trainer.max_steps=30
run cola task=cola task.data_dir=$data/glue/CoLA task.max_train_samples=256 task.max_eval_samples=128 trainer.max_steps=30
for m in lora prefix adapter diff_prune full_ft classifier_only; do
  run "rte_$m" task=rte method=$m task.data_dir=$data/glue/RTE task.max_train_samples=64 task.max_eval_samples=64 trainer.max_steps=8
done
run rte_cls_only task=rte method.variant=cls_only $sub
$py - "$out" "${BEFORE:-}" <<'PY'
import json, sys
from pathlib import Path
out, before = Path(sys.argv[1]), sys.argv[2]
rows = {}
for d in sorted(p for p in out.iterdir() if (p / "results.json").is_file()):
    evals = [{k: v for k, v in json.loads(line).items() if k != "wall_s"}  # every evaluation but its clock
             for line in (d / "metrics.jsonl").read_text().splitlines()]
    rows[d.name] = {"best_scores": json.loads((d / "results.json").read_text())["best_scores"], "evaluations": evals}
(out / "same_seed.json").write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
print(json.dumps({k: v["best_scores"] for k, v in rows.items()}, sort_keys=True))
if before:  # BEFORE=<an earlier same_seed.json>: every run's scores and losses, compared exactly
    old = json.loads(Path(before).read_text())
    differ = sorted(k for k in old.keys() | rows.keys() if old.get(k) != rows.get(k))
    print(f"identical: {len(rows) - len(differ)} of {len(rows)} runs" + (f"; differ: {differ}" if differ else ""))
    sys.exit(1 if differ else 0)
PY
