#!/usr/bin/env bash
# Create .venv with ckpt installed (editable) and the test tools; idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v gcc >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq gcc libc6-dev >/dev/null
fi
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import ckpt, pytest' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
fi
