#!/usr/bin/env bash
# Installs the Python client (non-editable, with its test extra) and runs its tests against the
# runwarden binary (RUNWARDEN_BIN, else $CARGO_TARGET_DIR/debug/runwarden, else
# <repo>/target/debug/runwarden). Works from any directory; exits non-zero on any failure,
# including a run that collected no tests (pytest exit code 5).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
export PIP_ROOT_USER_ACTION="${PIP_ROOT_USER_ACTION:-ignore}"  # CI runs as root; silence the warning

"$PYTHON" -m pip install --quiet "${HERE}[test]"

# Run from the tests directory so that `import runwarden` finds the installed package, not the
# source tree (the current directory is first on sys.path with `python -m`).
cd "${HERE}/tests"
status=0
"$PYTHON" -m pytest -q "${HERE}/tests" "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "ci.sh: pytest collected no tests; failing" >&2
    exit 1
fi
exit "$status"
