#!/usr/bin/env bash
# Set up ckpt and watch a demo process get dumped, killed, and restored under its PID.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/bootstrap.sh
exec .venv/bin/python demo/demo.py "$@"
