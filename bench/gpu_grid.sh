#!/usr/bin/env bash
# One grid of the `gpu` profile (whitened fast network) on one GPU in one command (issue: "one short GPU run for
# the paper's scale"): GRID=main (default; the paper's 18 with every defense of the grid and Spectral Signatures'
# retraining), then, as GPU time allows and in this order, GRID=sweep, hygiene, ensembles, and compare (every
# defense of the book on the same models; more than one slot, so run it with ONLY patterns or repeat the call).
# SHARDS processes share the GPU. Results go to $RESULTS/gpu/$GRID/*.json and a tar of them; the runner resumes,
# so a second call finishes what a first one left.
#
#   RESULTS=/tmp/res TAR=/tmp/gpu-main.tar.gz SHARDS=1 LIMIT=540 bash bench/gpu_grid.sh
#   GRID=compare ONLY='pair1-*' RESULTS=/tmp/res TAR=/tmp/gpu-compare.tar.gz LIMIT=540 bash bench/gpu_grid.sh
#
# Measured on one H200 (README): about 40 s an experiment in one process, so the 18 need about 12 minutes (two
# calls, or --only subsets). Nine shards with every process using all 16 cores' threads finished nothing in 500 s;
# each shard now gets nproc/SHARDS threads.
#
# Without the project installed it runs from src/ (PYTHONPATH); CIFAR-10 comes from POISONCURE_CIFAR10 or shared/.
# GRID=hygiene also needs Fashion-MNIST: the device machine is offline, so carry a folder with its four files and
# point POISONCURE_FASHION_MNIST at it.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-results}
GRID=${GRID:-main}
ONLY=${ONLY:-}
SHARDS=${SHARDS:-1}
LIMIT=${LIMIT:-480}
TAR=${TAR:-$RESULTS/gpu-$GRID.tar.gz}
# the gpu profile's `reproduce` grids (src/poisoncure/experiments/profiles/gpu.yml; a test keeps the two equal), checked
# here because the runner refuses an unknown grid only after the data are decoded
GRIDS="main reverse sweep hygiene ensembles compare"
known=0; for g in $GRIDS; do [ "$g" = "$GRID" ] && known=1; done
[ "$known" = 1 ] || { echo "GRID must be one of the gpu profile's grids: $GRIDS (got '$GRID')" >&2; exit 2; }
mkdir -p "$RESULTS/gpu/logs"
PY=${PY:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
THREADS=$(( $(nproc) / SHARDS )); [ "$THREADS" -ge 1 ] || THREADS=1
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
start=$(date +%s)
$PY - <<'PY'
import torch
from poisoncure import data, provenance
print("device:", provenance.device_name("cuda" if torch.cuda.is_available() else "cpu"), "torch", torch.__version__)
data.load_cifar10(download=False)  # decoded once into the cache before the shards start
PY
echo "data ready after $(( $(date +%s) - start )) s"
pids=()
for k in $(seq 1 "$SHARDS"); do
  timeout "$LIMIT" $PY -m poisoncure.experiments.runner --profile gpu --grid "$GRID" ${ONLY:+--only "$ONLY"} \
    --shard "$k/$SHARDS" --results "$RESULTS" > "$RESULTS/gpu/logs/$GRID-shard$k.log" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
echo "grid finished after $(( $(date +%s) - start )) s (last non-zero exit: $rc)"
ls "$RESULTS/gpu/$GRID" 2>/dev/null | wc -l
tail -n 3 "$RESULTS"/gpu/logs/"$GRID"-shard*.log
tar -C "$RESULTS" -czf "$TAR" gpu
exit "$rc"
