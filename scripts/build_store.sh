#!/usr/bin/env bash
# Rebuild the shipped store, store/results.sqlite, from scratch with the project's own code.
# Every number in the shipped store comes from these commands; run from the repo root:
#   bash scripts/build_store.sh            (uses .venv, creating it through run.sh if needed)
set -euo pipefail
cd "$(dirname "$0")/.."
bash run.sh setup
PY=${EDITSCOPE_VENV:-.venv}/bin/python
STORE=${EDITSCOPE_STORE:-store/results.sqlite}
N=${CASES:-480}
SEED=${SEED:-0}
SET=smollm2-135m-n${N}-s${SEED}
tmp="$STORE.building"
rm -f "$tmp" "$tmp-wal" "$tmp-shm"
"$PY" -m compute --store "$tmp" kb build
"$PY" -m compute --store "$tmp" cases build --n "$N" --seed "$SEED" --set "$SET"
"$PY" -m compute --store "$tmp" knowledge measure --set "$SET"
"$PY" -m compute --store "$tmp" store finalize
mv "$tmp" "$STORE"
"$PY" -m compute --store "$STORE" store info
