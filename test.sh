#!/usr/bin/env bash
# Set up ckpt, run the linter, then both tiers of the test suite: tests/unit (any user)
# and the tests on real processes (root; skipped without it). Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/bootstrap.sh
.venv/bin/ruff check src tests bench demo
exec .venv/bin/python -m pytest -q "$@"
