#!/usr/bin/env bash
# Bounded fuzz smoke run of the `request_decode` target (fuzz/): installs
# cargo-fuzz when missing, builds the target with ASan and runs it for
# FUZZ_SECONDS (default 30) from the seed corpus. Exits non-zero when
# libFuzzer finds a crash; the input is left in fuzz/artifacts/request_decode/.
#
# Idempotent and non-interactive (fine under CI=true with no stdin). New
# corpus entries go to a scratch directory, never into the committed seeds.
# The first run on a fresh machine spends a few minutes installing
# cargo-fuzz and building every dependency with ASan; later runs reuse both.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TARGET=request_decode
SEEDS="fuzz/corpus/$TARGET"
FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
# libFuzzer's RSS ceiling. Untouched MAP_NORESERVE reservations made by
# GuardedAlloc cost address space, not RSS; a real leak or blow-up still
# trips this.
RSS_LIMIT_MB="${RSS_LIMIT_MB:-4096}"

log() { echo "fuzz-smoke: $*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

# libfuzzer-sys compiles libFuzzer from C++ source.
if ! command -v c++ >/dev/null 2>&1; then
    log "installing g++ (libfuzzer-sys builds libFuzzer from source)"
    as_root apt-get update -q
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends g++ </dev/null
fi

if cargo fuzz --version >/dev/null 2>&1; then
    log "cargo-fuzz present: $(cargo fuzz --version)"
else
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked </dev/null
fi

# cargo-fuzz passes -Zsanitizer=address; a stable toolchain accepts -Z
# flags only with RUSTC_BOOTSTRAP=1 (the ASan runtime ships with stable).
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

scratch="$(mktemp -d "${TMPDIR:-/tmp}/corelog-fuzz-corpus.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

log "building $TARGET"
cargo fuzz build "$TARGET" </dev/null

log "running $TARGET for ${FUZZ_SECONDS}s from $SEEDS ($(ls "$SEEDS" | wc -l) seeds)"
status=0
cargo fuzz run "$TARGET" "$scratch" "$SEEDS" -- \
    -max_total_time="$FUZZ_SECONDS" \
    -rss_limit_mb="$RSS_LIMIT_MB" \
    -timeout=10 \
    -print_final_stats=1 </dev/null || status=$?

if [ "$status" -ne 0 ]; then
    log "FAILED: libFuzzer exited $status; the crashing input is in fuzz/artifacts/$TARGET/"
    log "reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run $TARGET fuzz/artifacts/$TARGET/<file>"
    exit "$status"
fi
log "no crash in ${FUZZ_SECONDS}s"
