#!/usr/bin/env bash
# Installs everything the tests need (Mosquitto included) into .venv and runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get install -y mosquitto >/dev/null 2>&1 || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq mosquitto; }
fi
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || true   # browser tests skip without it
fi
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'
exec .venv/bin/python -m pytest -q "$@"
