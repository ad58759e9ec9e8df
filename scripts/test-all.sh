#!/usr/bin/env bash
# THE test command for corelog: installs test dependencies, builds, runs the
# Rust tests and the real-client compatibility suite. Exits non-zero if any
# stage fails. Works non-interactively (CI=true, no stdin).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

stage() { printf '\n==== %s ====\n' "$*"; }

stage "install test dependencies"
bash scripts/install-test-deps.sh

stage "cargo build --release"
cargo build --release

stage "cargo test --release --workspace"
cargo test --release --workspace

# fuzz step: request decoding and batch validation, bounded in time
stage "fuzz smoke (cargo fuzz, ${FUZZ_SECONDS:-30}s)"
bash scripts/fuzz-smoke.sh

stage "real-client compatibility suite (tests/clients)"
CORELOG_BIN="${CORELOG_BIN:-$ROOT/target/release/corelog}" \
    .venv/bin/pytest -q tests/clients

stage "all stages passed"
