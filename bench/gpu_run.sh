#!/usr/bin/env bash
# The one command for the GPU machine: install the carried wheels (built here by `python -m bench.gpu_wheels`
# into .whl/gpu: slim Ray, Optuna, the MLflow client and the small packages the machine's image lacks) into a
# temporary folder, put it and the repository on PYTHONPATH (Ray's workers inherit it), and run bench/ray_gpu.py.
#
#   bash bench/gpu_run.sh [bench/ray_gpu.py options, e.g. --write]
#
# With the device tool: run `bash bench/gpu_run.sh --write` with carry [".whl/gpu"] and fetch bench/RESULTS.md
# back through $OUT (the script copies it there when $OUT is set).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${GBVNET_WHEELS:-.whl/gpu}
PY=${PYTHON:-python3}
ls "$WHEELS"/ray-*.whl > /dev/null  # fails with a clear message when the folder was not carried
SITE=$(mktemp -d /tmp/gbvnet-site.XXXXXX)
"$PY" -m pip install -q --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$SITE/bin:$PATH"
status=0
"$PY" -m bench.ray_gpu "$@" 2>&1 | tee "${OUT:-/tmp}/ray_gpu.log" || status=$?
if [ -n "${OUT:-}" ]; then
  cp bench/RESULTS.md "$OUT/RESULTS.md"
fi
exit "$status"
