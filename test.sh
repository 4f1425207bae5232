#!/usr/bin/env bash
# Set up ckpt and run the linter and the whole test suite (as root).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/bootstrap.sh
.venv/bin/ruff check src tests bench demo
exec .venv/bin/python -m pytest -q "$@"
