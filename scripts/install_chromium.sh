#!/usr/bin/env bash
# Debian's chromium for the demo's browser test (tests/test_demo.py drives it through Playwright;
# Playwright's own browser download does not work on these machines). Installs only when missing
# and only as root; otherwise it says why and the test skips with that reason.
set -uo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "[setup] chromium is missing and cannot be installed here (needs root and apt-get);" \
       "the browser test will be skipped" >&2
  exit 0
fi
echo "[setup] installing Debian's chromium for the demo's browser test (once)"
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; then
  echo "[setup] apt-get could not install chromium; the browser test will be skipped" >&2
fi
exit 0
