#!/usr/bin/env bash
# The device check in one command (the `run` tool's command line: bash benchmarks/gpu/run_device.sh).
# Needs `.whl/` carried (benchmarks/gpu/build_wheels.py). Writes $OUT/*.json (8 files at most).
# Each step has its own timeout; the sum stays under 8 minutes. DEV=cpu SMALL=--small: a CPU dry run.
set -u
OUT=${OUT:-bench_out/device}; DEV=${DEV:-cuda}; SMALL=${SMALL:-}; mkdir -p "$OUT"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  timeout 90 python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
    || echo "wheel install failed"
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
PY=${PY:-python3}; export PYTHONDONTWRITEBYTECODE=1 MPLBACKEND=Agg
echo "{" > "$OUT/steps.json"
step() {  # step NAME TIMEOUT_S COMMAND...: run it, record rc and seconds in steps.json
  local name=$1 limit=$2; shift 2; local t0=$SECONDS
  echo "=== $name (timeout ${limit}s)"; timeout "$limit" "$@"; local rc=$?
  echo "  \"$name\": {\"rc\": $rc, \"s\": $((SECONDS - t0)), \"limit_s\": $limit}," >> "$OUT/steps.json"
}
C="benchmarks/gpu/device_check.py --device $DEV $SMALL --out $OUT"
step env 30 $PY $C --step env
step pytest 75 $PY $C --step pytest
if [ -n "$SMALL" ]; then ISZ=512; else ISZ=4096; fi
step inference 75 $PY benchmarks/inference.py --device "$DEV" --size $ISZ --no-fusion --json "$OUT/inference.json" \
  --work /tmp/unetgeo_device/inference
step scene 150 $PY $C --step scene
step tta 60 $PY $C --step tta
step tiles 30 $PY $C --step tiles
step train 40 $PY $C --step train
echo "  \"total_s\": $SECONDS}" >> "$OUT/steps.json"
cat "$OUT/steps.json"
