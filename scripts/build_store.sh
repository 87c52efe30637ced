#!/usr/bin/env bash
# Build (or bring up to date) the shipped store, store/results.sqlite, with the project's own code.
# Every number in the shipped store comes from these commands. Each step is idempotent and every run
# resumes where it stopped, so the script can be killed and started again at any point:
#   bash scripts/build_store.sh             all steps
#   STEPS="kb cases knowledge" bash scripts/build_store.sh   only some
# Steps: kb, cases, knowledge (pre-edit knowledge of the 480-case set), sweep (layer sweeps on 30 cases),
# robustness (4 editors x 240 cases x 16 rephrase types, with its all-types baseline), abilities (the
# unedited model's full ability suite), sequential (studies B and C on the 1,240-case set: every run to 500 edits
# or 150 past its collapse, quick ability suite every 50 edits, the full suite at the end; a finished run
# that ended without the full suite gets it from its saved final state when its line runs again), batch (study C's batch-single runs),
# finalize (stores correlations, checkpoints and vacuums).
# Runs are long on a 2-core CPU (hours each for the robustness and sequential steps); set
# OMP_NUM_THREADS=1 when two run side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
bash run.sh setup
PY=${EDITSCOPE_VENV:-.venv}/bin/python
STORE=${EDITSCOPE_STORE:-store/results.sqlite}
STEPS=${STEPS:-kb cases knowledge sweep robustness abilities sequential batch finalize}
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
if has abilities; then
  cli abilities measure --mode full
fi
SEQ="--set smollm2-135m-n1240-s0 --edits 500 --abilities-every 50"
if has sequential; then
  cli cases build --n 1240 --seed 0 --set smollm2-135m-n1240-s0
  # same edit order (order seed 0) for every run; the editors each remedy fixes run first
  cli run sequential --editor ROME $SEQ
  cli run sequential --editor ROME $SEQ --hp key_mismatch=true
  cli run sequential --editor MEMIT $SEQ --batch 10
  cli run sequential --editor AlphaEdit $SEQ --batch 10
  cli run sequential --editor FT-L $SEQ
  # study C's RECT sweep on ROME: each share to 200 edits (with the full suite there), then each run
  # extended to 500 (study B's remedy); a line whose edits an extended run already holds reports that run
  for k in 0.4 0.2 0.6; do cli run sequential --editor ROME ${SEQ/--edits 500/--edits 200} --hp rect_top=$k; done
  cli run sequential --editor ROME $SEQ --hp rect_top=0.4
  cli run sequential --editor MEMIT $SEQ --batch 1
  cli run sequential --editor AlphaEdit $SEQ --batch 1  # study C's instance-sequential AlphaEdit
  cli run sequential --editor ROME $SEQ --hp rect_top=0.2
  cli run sequential --editor ROME $SEQ --hp rect_top=0.6
fi
if has batch; then
  for editor in MEMIT AlphaEdit; do
    cli run batch --editor "$editor" --set smollm2-135m-n1240-s0 --sizes 1,10,50,100,200,500
  done
fi
if has finalize; then
  cli store finalize
  cli store info
fi
