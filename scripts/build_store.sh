#!/usr/bin/env bash
# Build (or bring up to date) the shipped store, store/results.sqlite, with the project's own code.
# Every number in the shipped store comes from these commands. Each step is idempotent and every run
# resumes where it stopped, so the script can be killed and started again at any point:
#   bash scripts/build_store.sh             all steps
#   STEPS="kb cases knowledge" bash scripts/build_store.sh   only some
# Steps: kb, cases, knowledge (pre-edit knowledge of the 480-case set), sweep (layer sweeps on 30 cases),
# robustness (4 editors x 240 cases x 16 rephrase types, with its all-types baseline), finalize.
set -euo pipefail
cd "$(dirname "$0")/.."
bash run.sh setup
PY=${EDITSCOPE_VENV:-.venv}/bin/python
STORE=${EDITSCOPE_STORE:-store/results.sqlite}
STEPS=${STEPS:-kb cases knowledge sweep robustness finalize}
cli() { "$PY" -m compute --store "$STORE" "$@"; }
has() { [[ " $STEPS " == *" $1 "* ]]; }

has kb && cli kb build
has cases && cli cases build --n 480 --seed 0 --set smollm2-135m-n480-s0
has knowledge && cli knowledge measure --set smollm2-135m-n480-s0
if has sweep; then
  cli run sweep --editor ROME --cases 30 --values 1,3,5,7,9,12
  cli run sweep --editor FT-L --cases 30 --values 1,3,5,7,9
  cli run sweep --editor MEMIT --cases 30 --field layers --values 1-2-3-4-5,2-3-4-5-6,4-5-6-7-8
fi
if has robustness; then
  for editor in ROME FT-L IKE MEMIT; do
    cli run robustness --editor "$editor" --cases 240 --seed 0
  done
fi
if has finalize; then
  cli store finalize
  cli store info
fi
