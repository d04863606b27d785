#!/usr/bin/env bash
# The test command (README; .ci/run calls exactly this). Extra arguments go to pytest,
# e.g. `bash scripts/test.sh -m "not slow"` skips the slow multi-worker tests locally.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install_chromium.sh  # the demo's browser test
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONWARNINGS=ignore
exec .venv/bin/python -m pytest tests "$@"
