#!/usr/bin/env bash
# DPM-Solver++ 10 steps against DDIM 25 on the campaign's diffusion checkpoints: the same
# 200 flows per class (same seed), then `tsda evaluate` of each against the real 10 % (TSTR,
# latent metrics with the guide). Usage: bash experiments/generative/sampler_check.sh [GEN=runs/gen] [EPOCHS=20]
# ONLY="cfg_dpmpp10 cfg_ddim25" restricts the settings (default: all four).
set -euo pipefail
GEN=${1:-runs/gen}
EPOCHS=${2:-20}
DATA=${DATA:-../shared/data/fgnet/d1.parquet}
export WANDB_MODE=${WANDB_MODE:-offline}
OUT=$GEN/sampler_check
mkdir -p "$OUT"
ONLY=${ONLY:-cfg_dpmpp10 cfg_ddim25 latent_dpmpp10 latent_ddim25}
check() {  # name ckpt sampler steps extra...
  local name=$1 ckpt=$2 sampler=$3 steps=$4; shift 4
  [[ " $ONLY " == *" $name "* ]] || return 0
  /usr/bin/time -f "%e s" -o "$OUT/$name.sample_seconds" \
    tsda sample --ckpt "$ckpt" --per-class 200 --seed 0 --sampler "$sampler" --steps "$steps" "$@" \
      --no-progress --out "$OUT/$name.parquet" > "$OUT/$name.sample.log" 2>&1
  tsda evaluate --real "$DATA" --invalid-rows drop --train-fraction 0.1 --tstr-epochs "$EPOCHS" \
    --classifier "$GEN/guide/checkpoints/best.ckpt" --no-plots --synthetic "$OUT/$name.parquet" \
    --out "$OUT/$name" > "$OUT/$name.evaluate.log" 2>&1
  echo "$name: sampled in $(cat "$OUT/$name.sample_seconds")"
}
check cfg_dpmpp10 "$GEN/diffusion/checkpoints/last.ckpt" dpmpp 10 --cfg-scale 2
check cfg_ddim25 "$GEN/diffusion/checkpoints/last.ckpt" ddim 25 --cfg-scale 2
check latent_dpmpp10 "$GEN/diffusion_latent/checkpoints/last.ckpt" dpmpp 10 --cfg-scale 1 --latent-guidance-scale 0.1
check latent_ddim25 "$GEN/diffusion_latent/checkpoints/last.ckpt" ddim 25 --cfg-scale 1 --latent-guidance-scale 0.1
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print(f"{'setting':<16} {'TSTR wF1':>9} {'TRTR wF1':>9} {'ratio':>6} {'latent FD':>10} {'coverage':>9}")
for name in ("cfg_dpmpp10", "cfg_ddim25", "latent_dpmpp10", "latent_ddim25"):
    if not (out / name / "fidelity.json").is_file():
        continue
    f = json.loads((out / name / "fidelity.json").read_text())
    t, lat = f["tstr"], f["latent"]
    print(f"{name:<16} {t['tstr']['weighted_f1']:>9.4f} {t['trtr']['weighted_f1']:>9.4f} {t['ratio']:>6.3f} "
          f"{lat['frechet']:>10.2f} {lat['coverage']:>9.3f}")
PY
