#!/usr/bin/env bash
# Sets up everything nlfs needs on a fresh machine (Python 3.11 + gcc): a virtual environment in
# .venv with torch, the package (and its C++ extension) and the dev tools; Fashion-MNIST from
# Debian's dataset-fashion-mnist package when running as root with apt. Idempotent and quick the
# second time: it reinstalls only when pyproject.toml, setup.py or csrc/ changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
log() { printf '[bootstrap] %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.nlfs-stamp"
want=$(cat pyproject.toml setup.py $(find csrc -type f 2>/dev/null | sort) 2>/dev/null | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing torch and nlfs (first run takes a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  # Pinned to the builds kept on local disk here; see the comment in pyproject.toml.
  "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  "$VENV/bin/python" -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi

FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -d "$FMNIST" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
      >/dev/null 2>&1 || log "could not install dataset-fashion-mnist; scikit-learn digits will be used"
  else
    log "not root or no apt: Fashion-MNIST not installed; the scikit-learn digits dataset will be used"
  fi
fi
