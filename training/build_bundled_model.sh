#!/usr/bin/env bash
# Rebuild the bundled default model (ssamba_stream/assets/kws12) from nothing, in one command:
#   bash training/build_bundled_model.sh [WORKDIR]        (default WORKDIR: data/bundled)
# 1. espeak-ng keyword data in the Speech Commands layout (voice-disjoint train/validation/test);
# 2. train ssamba-kws with training/recipes/kws-bundled.yaml (about 75 min on 2 CPU cores), then
#    continue with kws-bundled-noisy.yaml: word-level SNRs around the stream's, more unknown words (60 min),
#    then train continuously on rows of stream, per-block targets: kws-bundled-continuous.yaml (45 min)
#    and kws-bundled-continuous-anneal.yaml (lower rate, 20 min), then kws-bundled-continuous-long.yaml
#    (800 steps on a cosine schedule, 80 min), then kws-bundled-continuous-nearmiss.yaml (600 steps,
#    more unknown words, the keywords' near misses drawn three times as often, 55 min), then
#    kws-bundled-continuous-nearmiss-strong.yaml (400 steps, unknown words as many as keywords, the
#    near misses drawn five times as often, 40 min);
# 3. stage 9 (kws-multi-engine.yaml, 700 steps, 30 min): stage 7 continued on speech from six
#    engines (espeak-ng, MBROLA, festival, SVOX Pico, Piper, and Kokoro's 40 styles and blends, made
#    apart and linked in; needs `sudo training/setup_speech.sh`), half the clips in simulated rooms;
#    `best/` is chosen on RHVoice, an engine left out of training;
# 4. export stage 9's best as the ONNX step graph;
# 5. tune the detector defaults on a 2-hour RHVoice stream (held-out engine, 20 dB, <= 2 FA/h);
# 6. report FRR and FA/h on an hour of the reserved voices (flite, festival kal/ked/slt: never used
#    for any choice) and on a 60-minute stream of espeak-ng test voices;
# 7. rebuild examples/keywords.wav from espeak-ng test voices.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-data/bundled}"
PY="${PYTHON:-.venv/bin/python}"
BIN="$(dirname "$PY")"
ASSET=ssamba_stream/assets/kws12/model.onnx

"$PY" -m ssamba_training.synth --out "$WORK/sc12" --seed 0 --val-engines none --test-engines none --jobs "$(nproc)"
OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}" "$PY" training/train.py \
  --recipe training/recipes/kws-bundled.yaml data.root="$WORK/sc12" --out "$WORK/run"
OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}" "$PY" training/train.py \
  --recipe training/recipes/kws-bundled-noisy.yaml data.root="$WORK/sc12" model.init_from="$WORK/run/best" \
  --out "$WORK/run-noisy"
OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}" "$PY" training/train.py \
  --recipe training/recipes/kws-bundled-continuous.yaml data.root="$WORK/sc12" model.init_from="$WORK/run-noisy/best" \
  --out "$WORK/run-continuous"
OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}" "$PY" training/train.py \
  --recipe training/recipes/kws-bundled-continuous-anneal.yaml data.root="$WORK/sc12" \
  model.init_from="$WORK/run-continuous/final" --out "$WORK/run-continuous-anneal"
OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}" "$PY" training/train.py \
  --recipe training/recipes/kws-bundled-continuous-long.yaml data.root="$WORK/sc12" \
  model.init_from="$WORK/run-continuous-anneal/final" --out "$WORK/run-continuous-long"
OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}" "$PY" training/train.py \
  --recipe training/recipes/kws-bundled-continuous-nearmiss.yaml data.root="$WORK/sc12" \
  model.init_from="$WORK/run-continuous-long/final" --out "$WORK/run-continuous-nearmiss"
OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}" "$PY" training/train.py \
  --recipe training/recipes/kws-bundled-continuous-nearmiss-strong.yaml data.root="$WORK/sc12" \
  model.init_from="$WORK/run-continuous-nearmiss/final" --out "$WORK/run-continuous-nearmiss-strong"
"$PY" -m ssamba_training.synth --out "$WORK/multi" \
  --train-engines espeak,mbrola,festival,pico,piper --val-engines rhvoice --test-engines reserved \
  --max-speakers 200 --per-voice 3 --unknown-per-voice 1 \
  --renditions mbrola=20,festival=40,pico=100,piper=200,rhvoice=40,flite=30 --rirs 200 --seed 0 --jobs "$(nproc)"
# Kokoro (~50 min on 2 cores): training voices only, linked into a copy of the multi-engine set, so
# its validation and test splits (and the streams below) stay those of the five engines.
"$PY" -m ssamba_training.synth --out "$WORK/kokoro" --train-engines kokoro --val-engines none \
  --test-engines none --val-voices 0 --test-voices 0 --renditions kokoro=8 --noise-clips 0 --seed 0 \
  --jobs "$(nproc)"
rm -rf "$WORK/multi_kokoro" && cp -al "$WORK/multi" "$WORK/multi_kokoro"
for word in "$WORK/kokoro"/*/; do
  word="$(basename "$word")"
  [ "$word" = _background_noise_ ] || ln "$WORK/kokoro/$word"/*.wav "$WORK/multi_kokoro/$word/"
done
# Both clip tables in one (a new file: the copied one is a hard link to the multi-engine set's), so
# that --engines picks and the engine adversary see the Kokoro clips too.
{ cat "$WORK/multi/synth_clips.csv"; tail -n +2 "$WORK/kokoro/synth_clips.csv"; } > "$WORK/multi_kokoro/clips.tmp"
mv "$WORK/multi_kokoro/clips.tmp" "$WORK/multi_kokoro/synth_clips.csv"
OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}" "$PY" training/train.py \
  --recipe training/recipes/kws-multi-engine.yaml data.root="$WORK/multi_kokoro" \
  model.init_from="$WORK/run-continuous-nearmiss-strong/final" --out "$WORK/run-multi-engine"
"$BIN/ssamba-export" onnx "$WORK/run-multi-engine/best" --block 8 --batch 0 -o "$ASSET"
"$PY" training/stream_builder.py --data "$WORK/multi" --split validation --engines rhvoice --minutes 120 \
  --snr-db 20 --seed 13 --out "$WORK/streams/val_rhvoice_20db_120.wav"
"$BIN/ssamba-export" tune "$ASSET" --stream "$WORK/streams/val_rhvoice_20db_120.wav" --max-fa-per-hour 2
"$PY" training/stream_builder.py --data "$WORK/multi" --split testing --minutes 60 --snr-db 20 --seed 14 \
  --out "$WORK/streams/test_reserved_20db_60.wav"
"$BIN/ssamba-stream" evaluate --stream "$WORK/streams/test_reserved_20db_60.wav" --out "$WORK/report"
"$PY" training/stream_builder.py --data "$WORK/sc12" --split testing --minutes 60 --snr-db 10 --seed 1 \
  --out "$WORK/streams/test60.wav"
"$BIN/ssamba-stream" evaluate --stream "$WORK/streams/test60.wav" --out "$WORK/report"
"$PY" training/stream_builder.py --data "$WORK/sc12" --split testing --minutes 0.5 --snr-db 20 \
  --keyword-share 0.8 --seed 0 --out examples/keywords.wav
