#!/usr/bin/env bash
# Installs everything the real-client compatibility suite (tests/clients) needs.
# Idempotent and non-interactive (fine under CI=true with no stdin/TTY):
#   - kcat from Debian (apt), only when missing
#   - Go and sarama from Debian (apt), only when missing
#   - a Python venv at .venv with the pinned tests/clients/requirements.txt
#   - KafkaJS (pinned in tests/clients/node/package-lock.json) via npm ci
# Each step is skipped when already done (markers hold a hash of their inputs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export DEBIAN_FRONTEND=noninteractive
log() { echo "install-test-deps: $*" >&2; }

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

# ---------------------------------------------------------------- kcat (apt)
if command -v kcat >/dev/null 2>&1; then
    log "kcat present: $(command -v kcat)"
else
    log "installing kcat from apt"
    as_root apt-get update -q
    as_root apt-get install -y -q --no-install-recommends kcat </dev/null
fi

# ------------------------------------------------- Go + sarama (apt, Debian's)
# Shopify's sarama as Debian packages it (1.22); tests/clients/test_sarama.py
# builds its driver in GOPATH mode against /usr/share/gocode (no Go proxy).
if command -v go >/dev/null 2>&1 && [ -d /usr/share/gocode/src/github.com/Shopify/sarama ]; then
    log "go and sarama present: $(go version)"
else
    log "installing golang-go + golang-github-shopify-sarama-dev from apt"
    as_root apt-get update -q
    as_root apt-get install -y -q --no-install-recommends golang-go golang-github-shopify-sarama-dev </dev/null
fi

# ---------------------------------------------------------------- python venv
REQ="tests/clients/requirements.txt"
VENV=".venv"
PY="${PYTHON:-python3}"
want="$(hash_of "$REQ")-$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
marker="$VENV/.corelog-deps"
if [ -x "$VENV/bin/python" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ] \
    && "$VENV/bin/python" -c 'import pytest, confluent_kafka, kafka' >/dev/null 2>&1; then
    log "python venv up to date ($VENV)"
else
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        log "creating venv at $VENV"
        rm -rf "$VENV"
        if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
            # Debian's system python needs python3-venv for ensurepip.
            log "python venv module unusable; installing python3-venv"
            as_root apt-get update -q
            as_root apt-get install -y -q --no-install-recommends python3-venv </dev/null
            rm -rf "$VENV"
            "$PY" -m venv "$VENV"
        fi
    fi
    log "installing pinned python packages from $REQ"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$REQ"
    echo "$want" > "$marker"
fi

# ---------------------------------------------------------------- node (kafkajs)
NODE_DIR="tests/clients/node"
if ! command -v npm >/dev/null 2>&1; then
    log "installing nodejs + npm from apt"
    as_root apt-get update -q
    as_root apt-get install -y -q --no-install-recommends nodejs npm </dev/null
fi
want_node="$(hash_of "$NODE_DIR/package.json" "$NODE_DIR/package-lock.json")"
node_marker="$NODE_DIR/node_modules/.corelog-deps"
if [ -f "$node_marker" ] && [ "$(cat "$node_marker")" = "$want_node" ] \
    && [ -f "$NODE_DIR/node_modules/kafkajs/package.json" ]; then
    log "node modules up to date ($NODE_DIR)"
else
    log "npm ci in $NODE_DIR"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want_node" > "$node_marker"
fi

log "done"
