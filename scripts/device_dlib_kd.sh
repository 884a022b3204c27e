#!/usr/bin/env bash
# One lent-GPU call (the `device` tool: at most 10 minutes a command, 64 MiB in, 8 files of at most 16 MiB back)
# that runs four trainings side by side on the one GPU, each fitted by --time-budget into MINUTES:
#   dlib   configs/fer2013_dlibresnet_ft_gpu.yaml                 the face-pretrained teacher, up to 60 epochs
#   x05    configs/fer2013_shufflenet_dlibkd_long_gpu.yaml        the default's recipe, up to 300 epochs
#   x10    the same with model.name=shufflenet_v2_x1_0            the x1.0's recipe, up to 200 epochs
#   x05ens the same with the dlib + x1.0 ensemble's logits        up to 300 epochs
# then the new teacher's flip-averaged logits on the training crops, and into DEST (default $OUT):
#   dlib_live.pt, dlib_ema.pt   the teacher's last.pt as two float16 checkpoints (live / EMA weights as "model")
#   dlib_gpu_flip_train.pt      its EMA's flip-averaged logits on the training crops (teacher.logits_file format)
#   x05.tar                     x05/ and x05ens/ last.pt and best.pt without optimizer state
#   x10_last.pt, x10_best.pt    the same for x10
#   logs.tar                    every run's log.csv, config.yaml and output
# Inputs (ignored, carried in `crops/gpu`, ~62 MB; the repository's weight files must not travel beside them):
#   python scripts/pack_cache.py pack crops/fer64a0 crops/gpu/fer64a0_pack --splits train,val --limit val=1000
#   crops/gpu/dlib_face_init_fp16.pt, crops/gpu/dlib_flip_train_fp16.pt, crops/gpu/dlib_x1_flip_train_fp16.pt
# JOBS picks the runs (default "dlib x05 x10 x05ens"); MPS=1 starts CUDA MPS first. Measured (session 25): four
# processes time-slicing the GPU gave the students 9 s per epoch (40 ms a step) against the teacher's 4 s.
# A CPU smoke run here checks the wiring (not the numbers):
#   DEST=/tmp/dev MINUTES=0.5 EXTRA="device=cpu amp=none data.limit_train=256 data.limit_val=128" \
#     bash scripts/device_dlib_kd.sh
set -uo pipefail  # no -e: one failed run must not lose the others' results
MINUTES=${MINUTES:-7.5}
DEST=${DEST:-${OUT:-runs/gpu/out}}
RUN=runs/gpu
read -r -a SETS <<< "${EXTRA:-}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || PY=python
mkdir -p "$DEST" "$RUN"
{
  date -u +%FT%TZ
  nvidia-smi -L 2>/dev/null
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  [[ -f crops/gpu/fer64a0/index.json ]] || "$PY" scripts/pack_cache.py unpack --lenient crops/gpu/fer64a0_pack crops/gpu/fer64a0
} 2>&1 | tee "$RUN/setup.log"

train() {  # name, config, extra --set values...
  local name=$1 config=$2
  shift 2
  "$PY" -m lightfer train "$config" --time-budget "$MINUTES" --fit-share 0.9 --threads 3 \
    --set "output_dir=$RUN/$name" "$@" "${SETS[@]}" > "$RUN/$name.log" 2>&1
  echo "$name: exit $? at $(date -u +%T)" | tee -a "$RUN/setup.log"
}
if [[ "${MPS:-0}" == 1 ]]; then  # CUDA MPS: the runs' kernels share the GPU instead of taking turns
  nvidia-cuda-mps-control -d && timeout 60 "$PY" -c "import torch; torch.zeros(1, device='cuda')" \
    && echo "MPS on" | tee -a "$RUN/setup.log" \
    || { echo quit | nvidia-cuda-mps-control; echo "MPS failed: time-sliced" | tee -a "$RUN/setup.log"; }
fi
for job in ${JOBS:-dlib x05 x10 x05ens}; do
  case $job in
    dlib) train dlib configs/fer2013_dlibresnet_ft_gpu.yaml & ;;
    x05) train x05 configs/fer2013_shufflenet_dlibkd_long_gpu.yaml & ;;
    x10) train x10 configs/fer2013_shufflenet_dlibkd_long_gpu.yaml model.name=shufflenet_v2_x1_0 epochs=200 & ;;
    x05ens) train x05ens configs/fer2013_shufflenet_dlibkd_long_gpu.yaml \
      teacher.logits_file=crops/gpu/dlib_x1_flip_train_fp16.pt & ;;
  esac
done
wait

DEVICE=$("$PY" -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
[[ -f "$RUN/dlib/last.pt" ]] && "$PY" scripts/teacher_logits.py --data cache:crops/gpu/fer64a0 --split train --teacher "$RUN/dlib/last.pt" --flip \
  --device "$DEVICE" --out "$DEST/dlib_gpu_flip_train.pt" --report val > "$RUN/dlib_logits.log" 2>&1
"$PY" - "$RUN" "$DEST" <<'PYEOF' 2>&1 | tee -a "$RUN/setup.log"
import sys
import tarfile
from pathlib import Path

from lightfer.train.checkpoint import TRAINING_STATE, load_checkpoint, save_checkpoint, strip_training_state

run, dest = Path(sys.argv[1]), Path(sys.argv[2])


def half(sd):
    return {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}


try:  # 2 x 22 MB of float32 weights: over one file's 16 MiB, so two float16 files
    st = load_checkpoint(run / "dlib" / "last.pt")
    base = {k: v for k, v in st.items() if k not in TRAINING_STATE and k not in ("model", "ema")}
    save_checkpoint({**base, "model": half(st["model"]), "ema": None}, dest / "dlib_live.pt")
    if st.get("ema") is not None:
        save_checkpoint({**base, "model": half(st["ema"]), "ema": None}, dest / "dlib_ema.pt")
except Exception as e:  # noqa: BLE001
    print("dlib export failed:", e)
with tarfile.open(dest / "x05.tar", "w") as tar:
    for name in ("x05", "x05ens"):
        for ck in ("last", "best"):
            src = run / name / f"{ck}.pt"
            if src.is_file():
                tar.add(strip_training_state(src, run / f"{name}_{ck}.pt"), arcname=f"{name}_{ck}.pt")
for ck in ("last", "best"):
    if (run / "x10" / f"{ck}.pt").is_file():
        strip_training_state(run / "x10" / f"{ck}.pt", dest / f"x10_{ck}.pt")
with tarfile.open(dest / "logs.tar.gz", "w:gz") as tar:
    for p in sorted(run.glob("*.log")) + sorted(run.glob("*/log.csv")) + sorted(run.glob("*/config.yaml")):
        tar.add(p, arcname=str(p.relative_to(run)))
for p in sorted(dest.iterdir()):
    print(f"{p.name}: {p.stat().st_size / 1e6:.1f} MB")
PYEOF
