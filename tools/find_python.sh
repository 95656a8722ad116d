#!/usr/bin/env bash
# Prints the path of a Python >= 3.12: the newest on PATH first, then pyenv's versions folder.
# Used by the Makefile to build .venv; exits 1 with a message when none is found.
set -u
ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }
for c in python3.14 python3.13 python3.12 python3 python; do
  p=$(command -v "$c" 2>/dev/null) || continue
  if ok "$p"; then "$p" -c 'import sys; print(sys.executable)'; exit 0; fi
done
root=${PYENV_ROOT:-$HOME/.pyenv}
for p in $(ls -d "$root"/versions/3.*/bin/python3 2>/dev/null | sort -t/ -k1,1 -V -r); do
  if ok "$p"; then echo "$p"; exit 0; fi
done
echo "No Python >= 3.12 found on PATH or in $root/versions. Install one (e.g. 'pyenv install 3.12') and retry." >&2
exit 1
