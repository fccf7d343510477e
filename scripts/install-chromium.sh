#!/usr/bin/env bash
# Headless Chromium and its WebDriver from Debian, for tests/e2e/test_report_browser.py
# (`make test` runs this). Idempotent: does nothing when both are installed; reads the
# package lists again (apt-get update) only when the install fails without doing so.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
install=(apt-get install -y -q --no-install-recommends chromium chromium-driver)
if ! $SUDO "${install[@]}"; then
  $SUDO apt-get update -q
  $SUDO "${install[@]}"
fi
