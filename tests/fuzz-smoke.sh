#!/usr/bin/env bash
# Short, bounded coverage-guided fuzz run of every target on the checked-in seed corpus.
# Exits non-zero when a target crashes (panic, failed invariant, timeout, OOM); the input
# is left under tests/fuzz/artifacts/<target>/. See docs/fuzzing.md.
#
#   bash tests/fuzz-smoke.sh                       every target, 15 s each (about 3 min with the build)
#   FUZZ_SECONDS=600 bash tests/fuzz-smoke.sh      longer
#   FUZZ_TARGETS="decode_client core_sequence" ... some targets only
#   FUZZ_SANITIZER=address ...                     AddressSanitizer (via RUSTC_BOOTSTRAP=1)
#
# Runs on the stable toolchain: cargo-fuzz with `--sanitizer none` passes rustc only stable
# flags (-Cpasses=sancov-module, -Cllvm-args=..., --cfg fuzzing, -Cdebug-assertions).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

CARGO_FUZZ_VERSION=0.13.2
seconds="${FUZZ_SECONDS:-15}"
targets="${FUZZ_TARGETS:-decode_client decode_server verify_token core_sequence}"
sanitizer="${FUZZ_SANITIZER:-none}"
if [ "$sanitizer" != none ]; then
    # -Zsanitizer=... is a nightly flag; RUSTC_BOOTSTRAP=1 lets stable rustc accept it.
    export RUSTC_BOOTSTRAP=1
fi
# cargo caches rustc's answers keyed on flags but not on RUSTC_BOOTSTRAP: a failed probe
# from a run without it would be replayed. Always ask rustc afresh (costs milliseconds).
export CARGO_CACHE_RUSTC_INFO=0

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz $CARGO_FUZZ_VERSION (about 1.5 min on 2 cores)"
    cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

fuzz=(cargo fuzz)
fuzz_dir=(--fuzz-dir tests/fuzz)
start=$(date +%s)
if [ -z "${FUZZ_TARGETS:-}" ]; then
    "${fuzz[@]}" build "${fuzz_dir[@]}" --sanitizer "$sanitizer"
else
    for target in $targets; do
        "${fuzz[@]}" build "${fuzz_dir[@]}" --sanitizer "$sanitizer" "$target"
    done
fi
echo "built in $(( $(date +%s) - start )) s"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=()
for target in $targets; do
    echo "=== fuzz $target for ${seconds} s"
    mkdir -p "$work/$target"
    extra=()
    case "$target" in
        decode_*) extra=(-dict=tests/fuzz/json.dict) ;;
    esac
    # New inputs go to the scratch directory (first); the checked-in corpus is only read.
    if ! "${fuzz[@]}" run "${fuzz_dir[@]}" --sanitizer "$sanitizer" "$target" \
        "$work/$target" "tests/fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${extra[@]}" \
        >"$work/$target.log" 2>&1; then
        grep -m 1 -A 3 'panicked at' "$work/$target.log" || true
        grep -E -A 2 '^(SUMMARY|Failing input:|Base64:)' "$work/$target.log" || true
        echo "FAILED: $target; reproduce with:" >&2
        echo "  cargo fuzz run --fuzz-dir tests/fuzz -s $sanitizer $target tests/fuzz/artifacts/$target/<file>" >&2
        failed+=("$target")
        continue
    fi
    grep -E '^(#[0-9]+[[:space:]]+(INITED|DONE)|Done )|stat::(number_of_executed_units|average_exec_per_sec)' \
        "$work/$target.log" || true
done

echo "fuzz smoke run took $(( $(date +%s) - start )) s"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz smoke run: crashes in ${failed[*]}" >&2
    exit 1
fi
echo "fuzz smoke run: no crash in $targets"
