#!/usr/bin/env bash
# Every GPU check in one command, for a machine with a CUDA GPU: the `gpu` tests, the
# throughput table, and the wall times of the GPU sweep and of hinton2006's fit. Logs go to
# $OUT (default gpu-logs/). Wheels in .whl/ (if any) are installed first, for machines
# without network; full MNIST is read from $AESWEEP_MNIST (a folder holding MNIST/raw/).
#   bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-logs}
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 AESWEEP_DATA=${AESWEEP_DATA:-/tmp/aesweep-data}
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu-tests.log"
python3 scripts/bench_throughput.py --device cuda --repeats 3 2>&1 | tee "$OUT/bench.log"
for k in 1 32; do
    /usr/bin/time -f "aesweep sweep trainer=gpu steps_per_call=$k: %e s wall" \
        python3 -m aesweep sweep trainer=gpu steps_per_call=$k trainer.enable_progress_bar=false \
        hydra.sweep.dir="/tmp/sweep-k$k" 2>&1 | tail -14 | tee -a "$OUT/sweep.log"
done
if [ -n "${AESWEEP_MNIST:-}" ]; then
    python3 -m aesweep train experiment=hinton2006 trainer=gpu steps_per_call=32 \
        data.root="$AESWEEP_MNIST" data.download=false trainer.enable_progress_bar=false \
        hydra.run.dir=/tmp/hinton 2>&1 | tail -3 | tee "$OUT/hinton2006.log"
    cp /tmp/hinton/result.json "$OUT/hinton2006-result.json"
fi
