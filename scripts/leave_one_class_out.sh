#!/usr/bin/env bash
# Leave-one-class-out study of the default model's recipe (issue 12): one run per anomaly class trained without
# every curve showing it (primary or secondary), then the novelty study of all six on the test set.
#
#   nohup bash scripts/leave_one_class_out.sh WORK_DIR > WORK_DIR/loco.log 2>&1 &
#
# WORK_DIR holds (or receives, via scripts/retrain_default.sh) train_${N_FILE}_s8123.h5 and test_20000_s6006.h5 and their
# features. Each run is resumable (a cut-off run continues from its checkpoint; a finished one is skipped), two at a
# time with one thread each. Settings (environment): N_FILE (curves in the training file, 1000000), MAX_TRAIN (training
# curves per run, 200000), EPOCHS (6), SAMPLES (4), EXTRA ("--extra-channels density,noise"), PY, CLASSES (the six).
# Timings: a 200,000-curve run of 6 epochs 15-25 min two at a time on the 2-core AMD machines (2026-12-07).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:?usage: bash scripts/leave_one_class_out.sh WORK_DIR}"
PY="${PY:-$ROOT/.venv/bin/python}"
N_FILE="${N_FILE:-1000000}"; MAX_TRAIN="${MAX_TRAIN:-200000}"; EPOCHS="${EPOCHS:-6}"; SAMPLES="${SAMPLES:-4}"
EXTRA="${EXTRA:---extra-channels density,noise}"
CLASSES="${CLASSES:-aggregation interparticle ordered bimodal oversubtracted artefact}"
cd "$WORK"
stamp() { echo "$(date -u +%FT%TZ) $*"; }
done_epochs() { [ -f "$1/history.json" ] && "$PY" -c "import json,sys; print(len(json.load(open(sys.argv[1]))))" "$1/history.json" || echo 0; }
fit_one() {
    local run="loco_$1" step
    if [ "$(done_epochs "$run")" -ge "$EPOCHS" ]; then return 0; fi
    # shellcheck disable=SC2206
    step=(fit "train_${N_FILE}_s8123.h5" --method vi --out "$run" --exclude-class "$1" --max-train "$MAX_TRAIN"
          --epochs "$EPOCHS" --samples "$SAMPLES" --batch-size 256 --val-fraction 0.05 --kl-weight 0.1 --lr-schedule cosine
          --channels 16,32,64 --hidden 128 --workers 1 --outlier-fraction 0.1 --outlier-weight 0.5 --threads 1 --quiet $EXTRA)
    if [ -f "$run/checkpoint.pt" ]; then step+=(--resume); fi
    stamp "fit $run"
    "$PY" -m sasview_bnn_trainer.cli "${step[@]}" > "$run.log" 2>&1
}
set -- $CLASSES
while [ $# -gt 0 ]; do
    fit_one "$1" & first=$!
    if [ $# -gt 1 ]; then fit_one "$2" & second=$!; wait "$second"; fi
    wait "$first"
    shift $(( $# > 1 ? 2 : 1 ))
done
stamp "novelty study"
runs=(); for c in $CLASSES; do runs+=("loco_$c"); done
"$PY" -m sasview_bnn_trainer.evaluation.novelty_study "${runs[@]}" --test test_20000_s6006.h5 --out loco_study --samples "$SAMPLES"
stamp "done: $WORK/loco_study.md, loco_study.json"
