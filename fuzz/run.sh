#!/usr/bin/env bash
# Runs every libFuzzer harness of a fuzz build for SECONDS each, one after the other: first over
# the inputs that once crashed it (fuzz/regressions/<reader>/), then fuzzing from its seeds
# (BUILD/seeds/<reader>/, from make_seeds.py) with its dictionary (fuzz/<reader>.dict).
# Prints one line per harness (executions/s, coverage, features) and fails if any harness found
# a crash, a leak, a timeout or ran out of memory; the input that did it is saved under
# BUILD/artifacts/<reader>/ (replay: BUILD/fuzz/fuzz_<reader> FILE).
#
# Usage: fuzz/run.sh BUILD SECONDS [smoke]
#   smoke: fuzz into a scratch corpus that is thrown away (the CI smoke run); otherwise the corpus
#          is kept in BUILD/corpus/<reader>/ and grows from run to run.
# FUZZ_JOBS=N runs N harnesses at a time (default 1): each still gets SECONDS of wall time.
# FUZZ_ONLY="reader ..." runs only those harnesses (e.g. FUZZ_ONLY="gguf json_roundtrip").
set -uo pipefail

build=${1:?usage: fuzz/run.sh BUILD SECONDS [smoke]}
seconds=${2:?usage: fuzz/run.sh BUILD SECONDS [smoke]}
mode=${3:-keep}
here=$(cd "$(dirname "$0")" && pwd)
# readers that only take a path write their input to a file on every run: tmpfs makes that cheap
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
scratch=$(mktemp -d "${TMPDIR:-/tmp}/qwodel-fuzz-run-XXXXXX")
trap 'rm -rf "$scratch"' EXIT
# the harnesses' scratch directories go in here too: libFuzzer ends a process without running
# its atexit handlers, so they could not remove their own
export TMPDIR="$scratch/tmp"
mkdir -p "$TMPDIR"

results="$scratch/results"
mkdir -p "$results"

# Fuzzes one harness; its report line goes to $results/<reader>, prefixed FAIL when it failed.
fuzz_one() {
    local harness=$1
    local name reader
    name=$(basename "$harness")
    reader=${name#fuzz_}
    log="$build/logs/$reader.log"
    artifacts="$build/artifacts/$reader/"
    mkdir -p "$build/logs" "$artifacts"
    if [ "$mode" = smoke ]; then corpus="$scratch/$reader"; else corpus="$build/corpus/$reader"; fi
    mkdir -p "$corpus"
    if [ -d "$here/regressions/$reader" ] &&
        ! "$harness" -runs=0 "$here/regressions/$reader" >"$log" 2>&1; then
        echo "FAIL fuzz: $reader: a regression input fails again (see $log)" >"$results/$reader"
        return
    fi
    args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
          -artifact_prefix="$artifacts")
    [ -f "$here/$reader.dict" ] && args+=(-dict="$here/$reader.dict")
    seeds=()
    [ -d "$build/seeds/$reader" ] && seeds=("$build/seeds/$reader")
    "$harness" "${args[@]}" "$corpus" "${seeds[@]}" >"$log" 2>&1
    rc=$?
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$')
    speed=$(grep -oE 'exec/s: [0-9]+' <<<"$last" | grep -oE '[0-9]+')
    cov=$(grep -oE 'cov: [0-9]+' <<<"$last" | grep -oE '[0-9]+')
    ft=$(grep -oE 'ft: [0-9]+' <<<"$last" | grep -oE '[0-9]+')
    if [ $rc -eq 0 ]; then
        printf 'fuzz: %-16s ok    %8s runs %7s exec/s  cov %5s  ft %6s\n' "$reader" \
            "${execs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" >"$results/$reader"
    else
        {
            printf 'FAIL fuzz: %-16s FAIL  exit %d: %s\n' "$reader" "$rc" \
                "$(grep -m1 -E 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|runtime error|SUMMARY' "$log")"
            echo "fuzz:   log $log; the input: $(ls -t "$artifacts" | head -1)"
        } >"$results/$reader"
    fi
}

jobs_max=${FUZZ_JOBS:-1}
readers=()
for harness in "$build"/fuzz/fuzz_*; do
    [ -x "$harness" ] || continue
    name=$(basename "$harness")
    reader=${name#fuzz_}
    if [ -n "${FUZZ_ONLY:-}" ] && [[ " $FUZZ_ONLY " != *" $reader "* ]]; then continue; fi
    while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n; done
    fuzz_one "$harness" &
    readers+=("$reader")
done
wait

failed=()
for reader in "${readers[@]}"; do
    if [ ! -f "$results/$reader" ]; then
        echo "fuzz: $reader: no report (the run was interrupted)"
        failed+=("$reader")
    elif grep -q '^FAIL ' "$results/$reader"; then
        sed 's/^FAIL //' "$results/$reader"
        failed+=("$reader")
    else
        cat "$results/$reader"
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]}"
    exit 1
fi
