#!/usr/bin/env bash
# Does self-supervised pretraining on unlabelled synthesized speech and noise help when labels are
# scarce? One command, on an ssamba_training.synth data set:
#   bash training/ssl_few_labels.sh DATA [WORKDIR]          (default WORKDIR: runs/ssl-few-labels)
# 1. unlabelled audio: DATA's training split and background noises, labels dropped (links, no copies);
#    validation and test voices are never seen, not even unlabelled;
# 2. SSL pretraining of ssamba-kws (random frame masking, InfoNCE + 10 * MSE), SSL_STEPS steps;
# 3. fine-tuning on 10 % of the training labels (seeded, per class) with kws-bundled's stream recipe,
#    once from scratch and once from (2), same seed, same steps;
# 4. both held-out test accuracies (B = 8), from each run's final/config.json.
# Environment: SSL_STEPS (300), FT_EPOCHS (4), LABEL_FRACTION (0.1), PYTHON (.venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:?usage: bash training/ssl_few_labels.sh DATA [WORKDIR]}"
WORK="${2:-runs/ssl-few-labels}"
PY="${PYTHON:-.venv/bin/python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
mkdir -p "$WORK"

"$PY" - "$DATA" "$WORK/unlabelled" <<'PYEOF'
import sys
from pathlib import Path

data, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
held_out = {line.strip() for name in ("validation_list.txt", "testing_list.txt")
            for line in (data / name).read_text().splitlines() if line.strip()}
for folder in sorted(p for p in data.iterdir() if p.is_dir()):
    for clip in sorted(folder.glob("*.wav")):
        link = out / folder.name / clip.name
        if f"{folder.name}/{clip.name}" not in held_out and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(clip)
PYEOF

"$PY" training/train.py --recipe training/recipes/ssl-pretrain.yaml --out "$WORK/ssl" \
  data.root="$WORK/unlabelled" model.name=ssamba-kws ssl.mask_count=40 data.batch_size=64 data.num_workers=1 \
  optim.lr=1e-3 schedule.kind=constant schedule.warmup_steps=50 max_steps="${SSL_STEPS:-300}" \
  eval.every_steps=100000 checkpoint.every_steps=100000 log_every=25

FINE_TUNE=(--recipe training/recipes/kws-bundled.yaml data.root="$DATA" data.label_fraction="${LABEL_FRACTION:-0.1}"
  epochs="${FT_EPOCHS:-4}" schedule.warmup_steps=30 schedule.start_epoch=3 stream.eval_blocks=[8] eval.every_steps=100000
  checkpoint.every_steps=100000)
"$PY" training/train.py "${FINE_TUNE[@]}" --out "$WORK/scratch"
"$PY" training/train.py "${FINE_TUNE[@]}" --out "$WORK/pretrained" model.init_from="$WORK/ssl/final"

for run in scratch pretrained; do
  "$PY" -c "import json, sys; m = json.load(open(sys.argv[1]))['metadata']['metrics']; \
print(f'{sys.argv[2]:>10}: test accuracy (B=8) {m[\"test/accuracy\"]:.4f}')" "$WORK/$run/final/config.json" "$run"
done
