#!/bin/sh
# Usage: uvloop.sh PYTHON DIR
# A venv at DIR for the CPython PYTHON, with uvloop installed from PyPI as a
# binary wheel (the host's pip fetches the wheel for PYTHON's version, so the
# interpreter needs no pip or ensurepip of its own). Exit 0: DIR/bin/python
# imports uvloop. Exit 3: PyPI has no uvloop wheel for this version.
# Exit 4: the wheel installed but uvloop does not import (the interpreter
# lacks what uvloop needs, e.g. a working ssl module). Anything else: an error. Idempotent: a venv that already imports uvloop is kept.
set -eu
py=$1
dir=$2
if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c 'import uvloop' 2>/dev/null; then
    exit 0
fi
ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
rm -rf "$dir"
"$py" -m venv --without-pip "$dir"
site=$("$dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
pip=$(command -v pip3 || command -v pip || true)
if [ -z "$pip" ]; then
    pip="python3 -m pip"
fi
if ! $pip install --disable-pip-version-check --quiet --no-deps --only-binary=:all: \
        --python-version "$ver" --implementation cp --platform manylinux2014_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
        --target "$site" uvloop 2>"$dir/pip.err"; then
    if grep -q "No matching distribution\|Could not find a version" "$dir/pip.err"; then
        echo "uvloop: no wheel for CPython $ver on PyPI" >&2
        exit 3
    fi
    cat "$dir/pip.err" >&2
    exit 1
fi
"$dir/bin/python" -c 'import uvloop' 2>"$dir/import.err" || {
    tail -1 "$dir/import.err" >&2
    exit 4
}
