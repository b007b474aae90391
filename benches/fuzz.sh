#!/usr/bin/env bash
# Gatehouse fuzzing benchmark: every cargo-fuzz target in fuzz/ (one per parser of untrusted
# input) for a fixed number of executions, in one reproducible run.
#
#   1. builds the targets: `cargo +nightly fuzz build -O -a` (optimised, with debug
#      assertions and overflow checks, so an overflow is a crash; AddressSanitizer)
#   2. runs each from its seeds (fuzz/seeds/TARGET, copied into a fresh corpus), with its
#      dictionary (fuzz/dict/TARGET.dict), for its share of FUZZ_RUNS_TOTAL executions
#                                                                target: 0 crashes
#   3. a table of executions, coverage (libFuzzer's final `cov:` and `ft:`), seconds and
#      crashes, printed and written to bench-data/fuzz-summary.md
#
# usage: benches/fuzz.sh [TARGET...]      (any user; the nightly toolchain and cargo-fuzz:
#                                          `cargo install cargo-fuzz --locked`)
#
# Environment (all optional):
#   FUZZ_RUNS_TOTAL  executions over all the targets run (default 12000000, at least 10 M),
#                    shared out by FUZZ_WEIGHTS
#   FUZZ_WEIGHTS     TARGET:WEIGHT pairs (default: about each target's executions per second,
#                    so that each runs about as long; a target not listed weighs 3)
#   FUZZ_SECONDS     run each target this many seconds instead (scripts/fuzz-smoke: 20);
#                    no summary file is written then
#   FUZZ_TIMEOUT     seconds one input may take before it counts as a hang (default 10)
#   FUZZ_SANITIZER   cargo fuzz's --sanitizer (default address; none runs about twice as fast)
#   BENCH_DATA       where the summary goes (default: <repo>/bench-data, git-ignored)
#
# A crash, hang or out-of-memory stops that target; its input is in fuzz/artifacts/TARGET/,
# and `cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-…` replays it. Inputs that
# reached new code are added to fuzz/corpus/TARGET (git-ignored) for longer runs by hand.
# Exit status: 0 no crash, 1 a crash, hang or out-of-memory, other values: the run failed.
# Takes about 30 minutes on 2 cores for the default 12 M executions (about 5 per target),
# once the build is done (15 minutes the first time, 1 to 3 after a change).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=${BENCH_DATA:-$ROOT/bench-data}
RUNS_TOTAL=${FUZZ_RUNS_TOTAL:-12000000}
SECONDS_EACH=${FUZZ_SECONDS:-}
TIMEOUT=${FUZZ_TIMEOUT:-10}
SANITIZER=${FUZZ_SANITIZER:-address}
# ldap_entry asks NSS about every name it accepts (gatehouse::names::check), as a sync does.
WEIGHTS=${FUZZ_WEIGHTS:-key_text:8 ssh_command:7 config_file:4 ldap_entry:1 web_body:6 pam_user:3}
SCRIPT=fuzz.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/benches/lib.sh" # log, die, commas, bench_build_id (nothing here needs root)

for pair in FUZZ_RUNS_TOTAL:"$RUNS_TOTAL" FUZZ_TIMEOUT:"$TIMEOUT" FUZZ_SECONDS:"${SECONDS_EACH:-1}"; do
    [[ ${pair#*:} =~ ^[1-9][0-9]*$ ]] || die "${pair%%:*} must be a positive whole number (got '${pair#*:}')"
done
cd "$ROOT"
cargo +nightly fuzz --version >/dev/null 2>&1 ||
    die "needs the nightly toolchain and cargo-fuzz (rustup toolchain install nightly; cargo install cargo-fuzz --locked)"
mapfile -t ALL < <(cargo +nightly fuzz list)
TARGETS=("$@")
[ "${#TARGETS[@]}" -gt 0 ] || TARGETS=("${ALL[@]}")
for t in "${TARGETS[@]}"; do
    printf '%s\n' "${ALL[@]}" | grep -qx -- "$t" || die "no fuzz target '$t' (there are: ${ALL[*]})"
done
weight() {
    local pair
    for pair in $WEIGHTS; do
        [ "${pair%%:*}" != "$1" ] || { echo "${pair#*:}" && return; }
    done
    echo 3
}
declare -A RUNS_OF
WEIGHT_SUM=0
for t in "${TARGETS[@]}"; do
    [[ $(weight "$t") =~ ^[1-9][0-9]*$ ]] || die "FUZZ_WEIGHTS: $t needs a positive whole weight"
    WEIGHT_SUM=$((WEIGHT_SUM + $(weight "$t")))
done
for t in "${TARGETS[@]}"; do
    RUNS_OF[$t]=$(((RUNS_TOTAL * $(weight "$t") + WEIGHT_SUM - 1) / WEIGHT_SUM))
done

# ---------------------------------------------------------------- build
bench_build_id # the commit built, for the summary
log "building ${#TARGETS[@]} fuzz targets (cargo +nightly fuzz build -O -a, sanitizer $SANITIZER)"
BUILD_START=$(now_us)
cargo +nightly fuzz build -O -a --sanitizer "$SANITIZER" >&2
BUILD_S=$(awk -v t=$(($(now_us) - BUILD_START)) 'BEGIN { printf "%.0f", t / 1e6 }')
TRIPLE=$(rustc +nightly -vV | sed -n 's/^host: //p')
BIN=$ROOT/fuzz/target/$TRIPLE/release

# ---------------------------------------------------------------- runs
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-fuzz.XXXXXX")
trap 'rm -rf -- "$SCRATCH"' EXIT
ROWS=()
CRASHES=0
EXECS_TOTAL=0
for t in "${TARGETS[@]}"; do
    corpus=$SCRATCH/corpus-$t
    mkdir -p "$corpus" "fuzz/artifacts/$t" "fuzz/corpus/$t"
    cp "fuzz/seeds/$t"/* "$corpus/"
    args=(-timeout="$TIMEOUT" -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/")
    [ ! -f "fuzz/dict/$t.dict" ] || args+=(-dict="fuzz/dict/$t.dict")
    if [ -n "$SECONDS_EACH" ]; then
        args+=(-max_total_time="$SECONDS_EACH")
        log "$t: $SECONDS_EACH s from $(find "$corpus" -type f | wc -l) seeds"
    else
        args+=(-runs="${RUNS_OF[$t]}")
        log "$t: $(commas "${RUNS_OF[$t]}") executions from $(find "$corpus" -type f | wc -l) seeds"
    fi
    start=$(now_us)
    status=0
    "$BIN/$t" "${args[@]}" "$corpus" >"$SCRATCH/$t.log" 2>&1 || status=$?
    secs=$(awk -v t=$(($(now_us) - start)) 'BEGIN { printf "%.1f", t / 1e6 }')
    # The last status line (`#N DONE cov: … ft: … corp: …`, or the last before a crash).
    cov=$(grep -o 'cov: [0-9]*' "$SCRATCH/$t.log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$SCRATCH/$t.log" | tail -1 | cut -d' ' -f2)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$SCRATCH/$t.log" | tail -1)
    found=$(grep -c 'Test unit written to' "$SCRATCH/$t.log" || true)
    if [ "$status" -ne 0 ] || [ "$found" -ne 0 ]; then
        [ "$found" -ne 0 ] || found=1 # died without writing its input: counts all the same
        CRASHES=$((CRASHES + found))
        grep -E 'ERROR: libFuzzer|panicked at|SUMMARY|Test unit written' "$SCRATCH/$t.log" | head -8 >&2 || true
        cp "$SCRATCH/$t.log" "fuzz/artifacts/$t/last-run.log"
        log "$t: exit status $status; the whole output is in fuzz/artifacts/$t/last-run.log"
    fi
    cp -n "$corpus"/* "fuzz/corpus/$t/" 2>/dev/null || true
    EXECS_TOTAL=$((EXECS_TOTAL + ${execs:-0}))
    ROWS+=("| $t | $(commas "${execs:-?}") | ${cov:-?} | ${ft:-?} | $secs | $found |")
done

# ---------------------------------------------------------------- summary
{
    if [ -n "$SECONDS_EACH" ]; then
        echo "# Fuzzing smoke test ($(date -u +%Y-%m-%dT%H:%MZ))"
        echo
        echo "$SECONDS_EACH s per target from its seeds; commit $BUILD_ID; $(nproc) cores; sanitizer $SANITIZER."
    else
        echo "# Fuzzing benchmark ($(date -u +%Y-%m-%dT%H:%MZ))"
        echo
        echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -sr), $(nproc) CPUs, commit $BUILD_ID, $(cargo +nightly fuzz --version), $(rustc +nightly --version | cut -d' ' -f1-2), sanitizer $SANITIZER."
        echo "Command: \`benches/fuzz.sh\` (FUZZ_RUNS_TOTAL=$RUNS_TOTAL shared out by FUZZ_WEIGHTS=\"$WEIGHTS\"; each target from its seeds)."
    fi
    echo
    echo "| target | executions | cov | ft | seconds | crashes |"
    echo "| --- | --- | --- | --- | --- | --- |"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "- total: $(commas "$EXECS_TOTAL") executions, $CRASHES crashes (target: 0); build ${BUILD_S} s."
    echo "- cov: code edges reached; ft: libFuzzer's features (edges with hit counts, compared values)."
} | if [ -n "$SECONDS_EACH" ]; then cat; else mkdir -p "$DATA" && tee "$DATA/fuzz-summary.md"; fi
[ "$CRASHES" -eq 0 ] || exit 1
