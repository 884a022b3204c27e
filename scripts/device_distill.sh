#!/usr/bin/env bash
# One lent-GPU call (the `device` tool: at most 10 minutes a command, 8 files of at most 16 MB back), on FER2013
# (TASK=fer2013) or FER+ (TASK=ferplus):
#   1. the EFF-ResNet18 teacher (configs/fer2013_effresnet18_gpu.yaml), fitted into TEACHER_MINUTES;
#   2. its flip-averaged logits on the training crops and the ShuffleNetV2 student with KD + manifold distillation
#      (configs/fer2013_shufflenet_md_effresnet_gpu.yaml), fitted into STUDENT_MINUTES;
#   3. both evaluated with flip TTA on PublicTest / PrivateTest, the student paired against the shipped model of
#      its width;
#   4. into DEST: teacher.pt and student.pt without optimizer state (~9-10 MB each: EMA and live weights),
#      teacher_logits.pt, teacher_log.csv, student_log.csv, teacher_eval.json, student_eval.json and the run's
#      pipeline.log: 8 files, the tool's limit.
# Run from the repository root. On the device machine (its python3 has torch with CUDA; lightfer runs from src/):
#   bash scripts/device_distill.sh                      # DEST defaults to $OUT there
#   TASK=ferplus bash scripts/device_distill.sh         # the same on crops/ferplus64a0_shards
# The crops travel as shards (docs/training.md, "Moving the crops to a lent GPU machine"). A CPU smoke run here
# (minutes; checks the wiring, not the numbers):
#   DEST=/tmp/dev DATA=cache:crops/fer64a0 LIGHTFER=lightfer \
#     EXTRA="device=cpu amp=none data.limit_train=512 data.limit_val=256" \
#     TEACHER_MINUTES=1 STUDENT_MINUTES=1 SPLITS=val bash scripts/device_distill.sh
# Variables: TASK (fer2013, or ferplus: the same recipes on FER+'s vote distributions, 8 classes), DATA (cache
# spec, default cache:crops/fer64a0_shards or cache:crops/ferplus64a0_shards), RUN (work folder, runs/device), DEST,
# STUDENT (registered width, shufflenet_v2_x1_0), COMPARE (shipped model to pair with; by width), TEACHER_MINUTES
# (3.5), STUDENT_MINUTES (4), SPLITS (val,test), EXTRA (more --set overrides for both trainings), SKIP_TEACHER=1
# (reuse RUN/teacher/best.pt), LIGHTFER (the command; default "python3 -m lightfer" with src/ on PYTHONPATH).
set -euo pipefail

TASK=${TASK:-fer2013}
case "$TASK" in
  fer2013) TASK_SETS="" ;;
  ferplus) TASK_SETS="data.target=soft loss.smoothing=0.0" ;;  # the annotators' vote distributions, 8 classes
  *) echo "TASK must be fer2013 or ferplus, not '$TASK'" >&2; exit 2 ;;
esac
DATA=${DATA:-cache:crops/${TASK/fer2013/fer}64a0_shards}
RUN=${RUN:-runs/device}
DEST=${DEST:-${OUT:-$RUN/out}}
STUDENT=${STUDENT:-shufflenet_v2_x1_0}
TEACHER_MINUTES=${TEACHER_MINUTES:-3.5}
STUDENT_MINUTES=${STUDENT_MINUTES:-4}
SPLITS=${SPLITS:-val,test}
EXTRA="$TASK_SETS ${EXTRA:-}"
case "$STUDENT" in
  shufflenet_v2_x1_0) COMPARE=${COMPARE:-shufflenet_v2_x1_0_$TASK} ;;
  *) COMPARE=${COMPARE:-shufflenet_v2_x0_5_$TASK} ;;
esac
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
read -r -a LF <<< "${LIGHTFER:-python3 -m lightfer}"
read -r -a SETS <<< "$EXTRA"
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || PY=python

mkdir -p "$DEST" "$RUN"

pipeline() {
  echo "== $(date -u +%FT%TZ) task=$TASK data=$DATA student=$STUDENT teacher=${TEACHER_MINUTES}min student=${STUDENT_MINUTES}min"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

  if [[ "${SKIP_TEACHER:-0}" != 1 ]]; then
    rm -f "$RUN/teacher_logits.pt"  # the student's run writes it anew from this teacher
    "${LF[@]}" train configs/fer2013_effresnet18_gpu.yaml --time-budget "$TEACHER_MINUTES" \
      --set "data.spec=$DATA" "output_dir=$RUN/teacher" progress=false "${SETS[@]}"
  fi
  "${LF[@]}" train configs/fer2013_shufflenet_md_effresnet_gpu.yaml --time-budget "$STUDENT_MINUTES" \
    --set "data.spec=$DATA" "output_dir=$RUN/student" "model.name=$STUDENT" "teacher.checkpoint=$RUN/teacher/best.pt" \
    "teacher.logits_file=$RUN/teacher_logits.pt" progress=false "${SETS[@]}"

  "${LF[@]}" eval "$RUN/teacher/best.pt" --data "$DATA" --split "$SPLITS" --tta --no-latency \
    --json "$DEST/teacher_eval.json"
  "${LF[@]}" eval "$RUN/student/best.pt" --data "$DATA" --split "$SPLITS" --tta --no-latency --compare "$COMPARE" \
    --json "$DEST/student_eval.json"

  "$PY" - "$RUN" "$DEST" <<'EOF'
import shutil
import sys

from lightfer.train.checkpoint import strip_training_state

run, dest = sys.argv[1:3]
for name in ("teacher", "student"):
    strip_training_state(f"{run}/{name}/best.pt", f"{dest}/{name}.pt")
    shutil.copy(f"{run}/{name}/log.csv", f"{dest}/{name}_log.csv")
shutil.copy(f"{run}/teacher_logits.pt", f"{dest}/teacher_logits.pt")
EOF
  ls -l "$DEST"
  echo "== $(date -u +%FT%TZ) done"
}

pipeline 2>&1 | tee "$DEST/pipeline.log"
