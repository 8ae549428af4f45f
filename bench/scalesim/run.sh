#!/bin/sh
# Installs SCALE-Sim (PyPI `scalesim`) into a virtual environment outside the repository
# and runs bench/scalesim/run.py with it (SCALE-Sim beside Tessera on ResNet-50's
# convolutions, BENCHMARKS.md "SCALE-Sim side by side"). Not part of CI. Run it from the
# repository's root after `cargo build --release --bin tessera`; arguments go to run.py.
set -e
VENV=${SCALESIM_VENV:-/tmp/scalesim-venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
# SCALE-Sim 3.0.0 converts one-element arrays to integers, which NumPy 2.4 refuses.
"$VENV/bin/python" -c 'import scalesim' 2>/dev/null ||
    "$VENV/bin/pip" install -q scalesim==3.0.0 "numpy<2" "pandas<3"
exec "$VENV/bin/python" "$(dirname "$0")/run.py" "$@"
