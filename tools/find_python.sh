#!/usr/bin/env bash
# Prints the path of a Python >= 3.12 interpreter (JAX 0.11 needs it): $PYTHON if set, then
# python3.13 / python3.12 / python3 on PATH, then pyenv-installed versions. Exits 1 if none.
set -u
ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }
for cand in ${PYTHON:-} python3.13 python3.12 python3 \
            "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3; do
  [ -n "$cand" ] || continue
  path=$(command -v "$cand" 2>/dev/null) || continue
  if ok "$path"; then echo "$path"; exit 0; fi
done
echo "error: wvd_jax needs Python >= 3.12 (JAX 0.11); install one or set PYTHON=/path/to/python3.12" >&2
exit 1
