#!/usr/bin/env bash
# The GPU checks of the batched engine in one go: the `gpu` and `serving` tests, then bench/gpu_serving.py.
#
# On a machine with pip access (no GPU needed), once:   bash bench/gpu_check.sh fetch
#   downloads into .whl/ (git-ignored) what the GPU machine lacks: bitsandbytes, and transformers at the
#   version this repo is tested with (the GPU image has an older one). About 57 MB.
# On the GPU machine, from the repository root, with .whl/ carried along:   bash bench/gpu_check.sh
#   about 8 minutes at most; writes tests.log, gpu_serving.json and gpu_serving.log to $OUT when set
#   (the device tool's folder that comes back), else to bench/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=(bitsandbytes==0.50.2 transformers==5.24.0)

if [[ "${1:-}" == "fetch" ]]; then
  exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
fi

RESULTS=${OUT:-bench/results}
mkdir -p "$RESULTS"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing the carried wheels failed"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

# conftest.py needs redis (absent there) and only serves the Redis tests; these files need none of it.
timeout 200 "$PY" -m pytest -q -m "gpu or serving" --noconftest -p no:cacheprovider -rs \
  tests/test_serving.py tests/test_transformers_backend.py tests/test_gpu_choice.py 2>&1 | tee "$RESULTS/tests.log"
tests_rc=${PIPESTATUS[0]}

timeout 345 "$PY" bench/gpu_serving.py >"$RESULTS/gpu_serving.json" 2>"$RESULTS/gpu_serving.log"
bench_rc=$?
tail -n 30 "$RESULTS/gpu_serving.log"
echo "tests exit $tests_rc, bench exit $bench_rc; results in $RESULTS"
[[ $tests_rc -eq 0 && $bench_rc -eq 0 ]]
