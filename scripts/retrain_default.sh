#!/usr/bin/env bash
# The default model's recipe as one resumable job: simulate, train, export, evaluate, score on real data.
#
# Every step keeps what it made and is skipped or resumed when run again (a session that is cut off
# loses only the step under way, and that one is resumed: the simulation by its parts, the fit by its
# per-epoch checkpoint). Start it in the background at the start of a session, from any folder with
# room (1,000,000 curves: about 32 GB at the end of the simulation, while its parts are merged, then 12.7 GB of curves
# and 6.2 GB of 6-channel features):
#
#   nohup bash scripts/retrain_default.sh WORK_DIR > WORK_DIR/retrain.log 2>&1 &
#
# Settings (environment): N (training curves, default 1000000), NTEST (test curves of seed 6006, 20000), SEED (8123), EPOCHS (6),
# THEN_EPOCHS (12: the run is then resumed up to this many epochs, which restarts the cosine schedule at
# epoch EPOCHS+1 of THEN_EPOCHS, as for the shipped sasview_bnn_vi16_sim24dn_1m; set it to EPOCHS for one schedule), SAMPLES (16),
# NAME (the model's name, default sasview_bnn_vi16_sim25dn2_1m: the recipe of the shipped sasview_bnn_vi16_sim24dn2_1m on
# this simulator), EXTRA ("--extra-channels density,noise"; add e.g. "--noise-scale scatter"),
# FIT_SEEDS (the fit seeds, "0 1": two independent runs on one split, exported together, SAMPLES/2 from each; "0": one run),
# RUN_NAME (runs are run_$RUN_NAME and run_${RUN_NAME}_seedS; default NAME), PY (the interpreter of the project's .venv).
# The timings of this 2-core machine kind: simulation 215-300 curves/s on the Intel machines, 460-740 on the AMD ones; an epoch of 1,000,000 curves 9-11 min on
# the Intel machines, 3.7-4.5 min on the AMD ones (2026-12-07: the whole job with THEN_EPOCHS 12 and one run in 85 min;
# a second run 56 min more).
# The ONNX file, its evaluation report and real-data table end up in WORK_DIR; copying the model into
# onnx_models/ and writing its card (sasview-bnn-train card) is a decision left to a person who has read them.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:?usage: bash scripts/retrain_default.sh WORK_DIR}"
PY="${PY:-$ROOT/.venv/bin/python}"
N="${N:-1000000}"; NTEST="${NTEST:-20000}"; SEED="${SEED:-8123}"; EPOCHS="${EPOCHS:-6}"; SAMPLES="${SAMPLES:-16}"
THEN_EPOCHS="${THEN_EPOCHS:-12}"
NAME="${NAME:-sasview_bnn_vi16_sim25dn2_1m}"; EXTRA="${EXTRA:---extra-channels density,noise}"
RUN_NAME="${RUN_NAME:-$NAME}"; FIT_SEEDS="${FIT_SEEDS:-0 1}"
mkdir -p "$WORK"; cd "$WORK"
train() { "$PY" -m sasview_bnn_trainer.cli "$@"; }
stamp() { echo "$(date -u +%FT%TZ) $*"; }

DATA="train_${N}_s${SEED}.h5"
if [ ! -f "$DATA" ]; then
    stamp "simulate $N curves"
    resume=""; [ -d "$DATA.parts" ] && resume="--resume"
    train simulate --n "$N" --seed "$SEED" --workers 2 --out "$DATA" --no-progress $resume
fi
TEST="test_${NTEST}_s6006.h5"
if [ ! -f "$TEST" ]; then
    stamp "simulate the test set"
    train simulate --n "$NTEST" --seed 6006 --workers 2 --out "$TEST" --no-progress
fi

done_epochs() { [ -f "$RUN/history.json" ] && "$PY" -c "import json,sys; print(len(json.load(open(sys.argv[1]))))" "$RUN/history.json" || echo 0; }
# fit_to E: train the run $RUN (settings $FIT) up to E epochs, resuming it from its checkpoint if it has one; skipped once it has E.
fit_to() {
    local step=("${FIT[@]}" --epochs "$1")
    if [ "$(done_epochs)" -ge "$1" ]; then return 0; fi
    if [ -f "$RUN/checkpoint.pt" ]; then step+=(--resume); fi
    stamp "fit to $1 epochs: ${step[*]}"
    train "${step[@]}"
}
# One run per fit seed (FIT_SEEDS, default "0"): seed 0 is run_$RUN_NAME, seed S > 0 run_${RUN_NAME}_seedS with
# --split-seed 0 (the validation curves of seed 0, so that export may put the runs into one graph).
RUNS=()
for FIT_SEED in $FIT_SEEDS; do
    RUN="run_$RUN_NAME"; SEED_ARGS=()
    if [ "$FIT_SEED" != 0 ]; then RUN="run_${RUN_NAME}_seed$FIT_SEED"; SEED_ARGS=(--seed "$FIT_SEED" --split-seed 0); fi
    RUNS+=("$RUN")
    FIT=(fit "$DATA" --method vi --out "$RUN" --samples "$SAMPLES" --batch-size 256 --val-fraction 0.05
         --kl-weight 0.1 --lr-schedule cosine --channels 16,32,64 --hidden 128 --workers 2 --outlier-fraction 0.1
         --outlier-weight 0.5 --threads 2 --quiet "${SEED_ARGS[@]}")
    # shellcheck disable=SC2206
    FIT+=($EXTRA)
    fit_to "$EPOCHS"
    if [ "$THEN_EPOCHS" -gt "$EPOCHS" ]; then fit_to "$THEN_EPOCHS"; fi
done

stamp "export"
train export "${RUNS[@]}" --samples "$SAMPLES" --novelty-score knn_entropy --out "$NAME.onnx"
stamp "evaluate"
train evaluate "$NAME.onnx" "$TEST" --report "report_$NAME"
stamp "real data"
"$PY" "$ROOT/scripts/real_data_table.py" --model "$NAME.onnx" --out "real_data_$NAME"
stamp "done: $WORK/$NAME.onnx, report_$NAME/, real_data_$NAME/"
