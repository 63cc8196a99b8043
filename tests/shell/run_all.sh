#!/usr/bin/env bash
# Runs every shell test in tests/shell (one after the other) and reports pass/fail per test.
# The binary is $SKERRY_BIN, or target/release/skerry (else target/debug/skerry) of this checkout.
# A failing test's whole output is printed; the exit status is non-zero if any test failed.
# Usage: tests/shell/run_all.sh [test-name...]   (names with or without .sh; default: all)
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../../scripts/skerry.sh
source "$HERE/../../scripts/skerry.sh"
PER_TEST_TIMEOUT="${SKERRY_SHELL_TEST_TIMEOUT:-300}"

if (($#)); then
    tests=()
    for t in "$@"; do tests+=("$HERE/${t%.sh}.sh"); done
else
    tests=()
    for t in "$HERE"/*.sh; do
        [[ "$(basename "$t")" == run_all.sh ]] || tests+=("$t")
    done
fi

bin="$(skerry_bin)"
if [[ ! -x "$bin" ]]; then
    echo "run_all.sh: no skerry binary at $bin (cargo build --release, or set SKERRY_BIN)" >&2
    exit 1
fi
export SKERRY_BIN="$bin"
echo "shell tests against $bin"

out_dir="$(mktemp -d "${TMPDIR:-/tmp}/skerry-shell-tests.XXXXXX")"
trap 'rm -rf "$out_dir"' EXIT
passed=()
failed=()
for t in "${tests[@]}"; do
    name="$(basename "$t" .sh)"
    if [[ ! -f "$t" ]]; then
        echo "FAIL  $name (no such test: $t)"
        failed+=("$name")
        continue
    fi
    start=$SECONDS
    timeout --kill-after=10 "$PER_TEST_TIMEOUT" bash "$t" >"$out_dir/$name.log" 2>&1
    rc=$?
    took=$((SECONDS - start))
    if ((rc == 0)); then
        printf 'PASS  %-28s %4ds\n' "$name" "$took"
        passed+=("$name")
    else
        ((rc == 124)) && echo "(timed out after ${PER_TEST_TIMEOUT}s)" >>"$out_dir/$name.log"
        printf 'FAIL  %-28s %4ds (exit %d)\n' "$name" "$took" "$rc"
        echo "----- output of $name -----"
        cat "$out_dir/$name.log"
        echo "----- end of $name -----"
        failed+=("$name")
    fi
done

echo "shell tests: ${#passed[@]} passed, ${#failed[@]} failed${failed[*]:+ (${failed[*]})}"
((${#failed[@]} == 0))
