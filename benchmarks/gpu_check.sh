#!/usr/bin/env bash
# Every GPU check of tsda in one run, at most 8 minutes on one GPU, ending with one markdown
# table (paste it into benchmarks/RESULTS.md):
#
#   bash benchmarks/gpu_check.sh          # from the repository root, on a machine with a GPU
#
# Parts, in this order, each under its own `timeout` (never past what is left of the 8 minutes):
#   tests        pytest -m gpu -q (tests/gpu/test_gpu.py: bf16-mixed fits of every module, sampling,
#                the ensemble executor, no host sync per step, determinism on CUDA)
#   syncs        host syncs per classifier training step (benchmarks/gpu_report.py syncs)
#   throughput   classifier training flows/s: CPU, CUDA fp32, CUDA bf16-mixed (benchmarks/epoch_overhead.py)
#   sampling     flows/s of each generator on CUDA (benchmarks/sampling_throughput.py)
#   campaign     ensemble vs process executor on CUDA: runs/hour, ratio, agreement (campaign_throughput.py)
# Data: the embedded synthetic dataset (no download); ../shared/data/fgnet/d1.parquet when present.
# Without CUDA torch but with nvidia-smi it first runs `make setup-gpu` (the CUDA build of torch);
# without a GPU it prints what it would run and exits 0. Each part's log, status and JSON land
# in $GPU_CHECK_OUT (default runs/gpu_check). GPU_CHECK_BUDGET_S (default 470) caps the whole;
# TSDA_PYTHON picks the interpreter (default .venv/bin/python).
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

BUDGET=${GPU_CHECK_BUDGET_S:-470}
OUT=${GPU_CHECK_OUT:-runs/gpu_check}
PY=${TSDA_PYTHON:-.venv/bin/python}
START=$SECONDS
export WANDB_MODE=disabled PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
D1=../shared/data/fgnet/d1.parquet
if [ -f "$D1" ]; then DATA=$D1; else DATA=synthetic; fi
mkdir -p "$OUT"
rm -f "$OUT"/*.status "$OUT"/*.json "$OUT"/tests.xml

# name, cap in seconds, command (the cap is each part's own timeout)
PARTS=(
  "tests|210|$PY -m pytest -m gpu -q -p no:cacheprovider --junitxml=$OUT/tests.xml"
  "syncs|35|$PY benchmarks/gpu_report.py syncs --steps 20 --warmup 5 --json $OUT/syncs.json"
  "throughput_cpu|45|$PY benchmarks/epoch_overhead.py --data $DATA --train-fraction 0.5 --device cpu --threads 0 --epochs 1 --no-plain --json $OUT/throughput_cpu.json"
  "throughput_cuda_fp32|30|$PY benchmarks/epoch_overhead.py --data $DATA --train-fraction 0.5 --device cuda --precision 32-true --epochs 5 --no-plain --json $OUT/throughput_cuda_fp32.json"
  "throughput_cuda_bf16|30|$PY benchmarks/epoch_overhead.py --data $DATA --train-fraction 0.5 --device cuda --precision bf16-mixed --epochs 5 --no-plain --json $OUT/throughput_cuda_bf16.json"
  "sampling|40|$PY benchmarks/sampling_throughput.py --device cuda --batch-sizes 1024 8192 --max-steps-timed 20 --repeats 2 --settings 'one pass' '20 packets' 'DPMPP 10' 'DDIM 25' 'DDPM 1000' --json $OUT/sampling.json"
  "campaign|90|$PY benchmarks/campaign_throughput.py --data $DATA --train-fraction 0.1 --seeds 3 --epochs 2 --workers 3 --device cuda --conditions no_aug,translation --json $OUT/campaign.json"
)

plan() {
  local total=0
  for part in "${PARTS[@]}"; do
    IFS='|' read -r name cap cmd <<< "$part"
    total=$((total + cap))
    printf '  %-22s up to %3s s: %s\n' "$name" "$cap" "$cmd"
  done
  echo "  the caps add up to $total s; the whole run stops at $BUDGET s (GPU_CHECK_BUDGET_S; 8 minutes by default)"
}

run_part() {  # NAME CAP COMMAND: runs COMMAND under min(CAP, time left); writes OUT/NAME.{log,status}
  local name=$1 cap=$2 cmd=$3 left t t0 rc status
  left=$((BUDGET - (SECONDS - START)))
  t=$((cap < left ? cap : left))
  if ((t < 10)); then
    echo "skipped: the ${BUDGET} s budget was spent" > "$OUT/$name.status"
    echo "[$name] skipped: budget spent"
    return
  fi
  echo "[$name] up to ${t} s"
  t0=$SECONDS
  # SIGINT first (pytest and Python stop cleanly and report what they have), SIGKILL 15 s later
  timeout -s INT -k 15 "$t" bash -c "$cmd" > "$OUT/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status="ok ($((SECONDS - t0)) s)" ;;
    124 | 137) status="timed out after ${t} s" ;;
    *) status="failed (exit $rc, $((SECONDS - t0)) s; see $OUT/$name.log)" ;;
  esac
  echo "$status" > "$OUT/$name.status"
  echo "[$name] $status"
  tail -n 4 "$OUT/$name.log" | sed 's/^/    /'
}

has_cuda() {  # the interpreter $1 runs and its torch sees a GPU
  "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' > /dev/null 2>&1
}

echo "tsda GPU check: $(date -u '+%Y-%m-%d %H:%M UTC'), data: $DATA, parts into $OUT"
echo "time estimate: at most $BUDGET s (about $(((BUDGET + 59) / 60)) minutes) after the set-up; parts:"
plan

if ! "$PY" -c 'import torch' > /dev/null 2>&1; then
  echo "$PY cannot import torch here (a venv copied from another machine whose interpreter is missing?)"
fi
if ! has_cuda "$PY" && command -v nvidia-smi > /dev/null 2>&1; then
  echo "GPU present ($(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -n 1)) but $PY's torch" \
    "has no CUDA: make setup-gpu (the CUDA build of torch 2.13.0), at most 180 s"
  if timeout -k 10 180 make setup-gpu PYTHON=python3 > "$OUT/setup-gpu.log" 2>&1 && has_cuda "$PY"; then
    echo "make setup-gpu: done"
  else
    echo "make setup-gpu FAILED: no CUDA torch installed. Is there no internet here (download.pytorch.org)?" \
      "Its log: $OUT/setup-gpu.log; last lines:"
    tail -n 5 "$OUT/setup-gpu.log" | sed 's/^/    /'
    if [ -z "${TSDA_PYTHON:-}" ] && has_cuda python3 && python3 -c 'import tsda.cli, lightning, jsonargparse, diffusers' > /dev/null 2>&1; then
      PY=python3
      echo "using the system python3 instead: its torch sees the GPU and tsda's dependencies import"
    fi
  fi
fi

if ! has_cuda "$PY"; then
  if command -v nvidia-smi > /dev/null 2>&1; then
    echo "no CUDA torch: GPU parts not run; running what needs no GPU (the CPU reference)"
    for part in "${PARTS[@]}"; do
      IFS='|' read -r name cap cmd <<< "$part"
      if [ "$name" = throughput_cpu ]; then
        run_part "$name" "$cap" "$cmd"
      else
        echo "not run: no CUDA torch (see make setup-gpu above)" > "$OUT/$name.status"
      fi
    done
    "$PY" benchmarks/gpu_report.py table "$OUT"
  else
    echo "no CUDA device: dry run, nothing measured"
    echo "on a GPU machine it would run (after make setup-gpu, if its torch lacks CUDA):"
    plan
  fi
  exit 0
fi

"$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "on", torch.cuda.get_device_name())'
for part in "${PARTS[@]}"; do
  IFS='|' read -r name cap cmd <<< "$part"
  run_part "$name" "$cap" "$cmd"
done

"$PY" - "$OUT" "$((SECONDS - START))" << 'EOF'
import datetime, json, os, sys, torch
json.dump({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cpus": os.cpu_count(), "seconds": int(sys.argv[2]),
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")},
          open(os.path.join(sys.argv[1], "machine.json"), "w"))
EOF
echo
"$PY" benchmarks/gpu_report.py table "$OUT" | tee "$OUT/table.md"
echo
echo "done in $((SECONDS - START)) s; table: $OUT/table.md"
