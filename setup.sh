#!/usr/bin/env bash
# One-command set-up on a fresh machine: system data packages, .venv/ with pinned deps, this repo
# installed editable, and the demo data. Idempotent: re-running reuses .venv/ and cached data.
set -euo pipefail
cd "$(dirname "$0")"
export PYTHONDONTWRITEBYTECODE=  # we want .pyc: without them every process imports ~10 s slower

# Demo data: Debian's Fashion-MNIST (real product photos).
if [ ! -d /usr/share/datasets/fashion-mnist ] && ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "[setup] apt-get install dataset-fashion-mnist"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "[setup] WARNING: Debian package dataset-fashion-mnist is not installed and cannot be installed here;"
    echo "        install it (apt-get install dataset-fashion-mnist) or the demo will try torchvision's download."
  fi
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
[ -x .venv/bin/uv ] || PIP_CONFIG_FILE=/dev/null .venv/bin/python -m pip install -q --disable-pip-version-check uv==0.13.9

# uv ignores pip's configuration: pass this machine's local wheel folders explicitly where they exist.
LOCAL=()
for d in /opt/wheels; do [ -d "$d" ] && LOCAL+=(--find-links "$d"); done
for d in /opt/pypi-more/simple /opt/pypi/simple; do [ -d "$d" ] && LOCAL+=(--extra-index-url "file://$d"); done

stamp=.venv/.installed-$(cat requirements.txt setup.py | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  echo "[setup] installing pinned requirements into .venv/ (uv)"
  t0=$(date +%s)
  .venv/bin/uv pip install --python .venv/bin/python --compile-bytecode -q --index-strategy unsafe-best-match "${LOCAL[@]}" -r requirements.txt
  .venv/bin/uv pip install --python .venv/bin/python --compile-bytecode -q "${LOCAL[@]}" --no-deps foolbox==3.3.4
  .venv/bin/uv pip install --python .venv/bin/python -q --no-deps -e .
  rm -f .venv/.installed-*; touch "$stamp"
  echo "[setup] installed in $(( $(date +%s) - t0 )) s"
fi
