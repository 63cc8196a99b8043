#!/usr/bin/env bash
# scripts/test.sh -- THE test command of Skerry (the README and .ci/run call exactly this).
#
# Works from any directory, on a fresh clone, with or without CI=true:
#   setup   checks the Rust toolchain (cargo, rustfmt, clippy),
#           installs curl, python3 and chromium with apt-get only if they are missing;
#   fmt     cargo fmt --check (the main crate and the helper crates under scripts/)
#   clippy  cargo clippy --all-targets -- -D warnings (the same crates)
#   build   cargo build --release (the shell tests and benchmarks use the release binary)
#   rust    the unit, integration and doc tests (cargo test; cargo nextest with SKERRY_NEXTEST=1),
#           with the power-loss tests on FUSE (tests/powerloss.rs; SKIPPED loudly where FUSE
#           cannot be mounted)
#   vendor  the vendored tiny_http and fjall crates' own tests (separate target directories)
#   shell   the shell tests (tests/shell/run_all.sh) against the release binary
#   chaos   the short real-process chaos run (scripts/chaos.sh, ~3 min): kill -9, partitions,
#           delayed, wedged and half-open links under concurrent clients, then G1-G6 checked
#   cross   the static aarch64 binary (scripts/release.sh, dev profile) and its --version under qemu
# Every section prints a banner and its duration, and a summary ends the run. A failing section
# does not hide the others' results: the run goes on (except after a failed setup or build, which
# the later sections need) and exits non-zero if any section failed.
#
# Optional environment:
#   SKERRY_SKIP           space-separated sections to skip, e.g. SKERRY_SKIP="fmt clippy"
#   SKERRY_TEST_THREADS   test threads within each Rust test binary (default: cargo's, = CPUs)
#   SKERRY_NEXTEST=1      run the Rust tests with cargo nextest (see rust_tests below)
#   SKERRY_FAIL_FAST=1    stop at the first failing section
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

if [[ -t 1 ]]; then COLOR=auto; else COLOR=never; fi
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-$COLOR}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
# The integration and shell tests start their own nodes: the caller's RUST_LOG would change
# what those nodes log.
unset RUST_LOG

RUN_START=$SECONDS
RESULTS=()
FAILED=()

summary() {
    local rc=$? line
    echo
    echo "==================== scripts/test.sh summary ===================="
    for line in "${RESULTS[@]}"; do echo "$line"; done
    printf '%-8s %-52s %5ds\n' "" "total" $((SECONDS - RUN_START))
    if ((rc == 0)); then
        echo "ALL PASSED"
    else
        echo "FAILED (exit $rc)${FAILED[*]:+: ${FAILED[*]}}"
    fi
    return "$rc"
}
trap summary EXIT

# run_section <name> <title> <function>: runs the function in a subshell with errexit, times it
# and records the result in RESULTS and LAST_RC. It must not be called where errexit is ignored
# (after `if`, `||`, `&&`), or errexit would be ignored inside the function too.
run_section() {
    local name="$1" title="$2" fn="$3" start rc
    if [[ " ${SKERRY_SKIP:-} " == *" $name "* ]]; then
        echo
        echo "==================== [$name] $title: skipped (SKERRY_SKIP) ===================="
        RESULTS+=("$(printf '%-8s %-52s %6s' skipped "[$name] $title" -)")
        LAST_RC=0
        return 0
    fi
    echo
    echo "==================== [$name] $title ($(date '+%H:%M:%S')) ===================="
    start=$SECONDS
    set +e
    (
        set -euo pipefail
        "$fn"
    )
    rc=$?
    set -e
    local took=$((SECONDS - start))
    if ((rc == 0)); then
        echo "---- [$name] ok (${took}s)"
        RESULTS+=("$(printf '%-8s %-52s %5ds' ok "[$name] $title" "$took")")
    else
        echo "---- [$name] FAILED with exit status $rc (${took}s)"
        RESULTS+=("$(printf '%-8s %-52s %5ds' FAILED "[$name] $title" "$took")")
        FAILED+=("$name")
        if [[ -n "${SKERRY_FAIL_FAST:-}" ]]; then exit "$rc"; fi
    fi
    LAST_RC=$rc
}

# ---------------------------------------------------------------------------------------------
setup() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: no Rust toolchain (cargo) on PATH; install rustup's stable toolchain first" >&2
        return 1
    fi
    cargo --version
    rustc --version
    local component
    for component in fmt clippy; do
        if ! cargo "$component" --version >/dev/null 2>&1; then
            if command -v rustup >/dev/null 2>&1; then
                echo "cargo $component is missing; adding it with rustup"
                rustup component add "$([[ $component == fmt ]] && echo rustfmt || echo clippy)"
            else
                echo "error: cargo $component is missing and rustup is not available" >&2
                return 1
            fi
        fi
        cargo "$component" --version
    done
    if [[ -n "${SKERRY_NEXTEST:-}" ]]; then
        cargo nextest --version | head -n 1 || echo "cargo-nextest not found: using cargo test"
    fi

    local missing=() sudo=()
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    # The status page is tested in a real headless browser (tests/monitoring.rs).
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    # The aarch64 cross build's --version runs under qemu-user (the cross section).
    command -v qemu-aarch64 >/dev/null 2>&1 || missing+=(qemu-user)
    command -v file >/dev/null 2>&1 || missing+=(file)
    # The power-loss tests mount FUSE: root does it itself, another user needs fusermount3.
    if [[ $(id -u) -ne 0 ]] && ! command -v fusermount3 >/dev/null 2>&1; then missing+=(fuse3); fi
    if ((${#missing[@]})); then
        echo "installing missing tools with apt-get: ${missing[*]}"
        if [[ $(id -u) -ne 0 ]]; then
            command -v sudo >/dev/null 2>&1 || {
                echo "error: ${missing[*]} missing, and neither root nor sudo" >&2
                return 1
            }
            sudo=(sudo -n)
        fi
        "${sudo[@]}" apt-get update -qq
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
    curl --version | head -n 1
    python3 --version
    chromium --version 2>/dev/null || echo "chromium: not available"
    echo "target directory: $TARGET_DIR"
}

# The helper crates under scripts/ (load generator, ceiling probes, chaos driver) are checked
# too: they are part of what the tests and the bench trust.
SCRIPT_CRATES=(scripts/loadgen scripts/ceiling scripts/chaos)
fmt() {
    cargo fmt --check -- --color "$COLOR" || return 1
    for c in "${SCRIPT_CRATES[@]}"; do
        (cd "$c" && cargo fmt --check -- --color "$COLOR") || return 1
    done
}

clippy() {
    cargo clippy --all-targets -- -D warnings || return 1
    for c in "${SCRIPT_CRATES[@]}"; do
        (cd "$c" && cargo clippy --all-targets -- -D warnings) || return 1
    done
}

build() {
    cargo build --release
    ls -l "$TARGET_DIR/release/skerry"
}

# cargo test by default: it runs each test binary as one process, and the test harness
# (tests/common/mod.rs `ips`) hands out unique loopback addresses per process with a counter.
# cargo nextest runs every test in its own process, where that counter always starts at 1, so
# two concurrent tests of one file can draw the same address; it is opt-in (SKERRY_NEXTEST=1).
rust_tests() {
    local threads=()
    if [[ -n "${SKERRY_TEST_THREADS:-}" ]]; then threads=(--test-threads "$SKERRY_TEST_THREADS"); fi
    local rc=0
    powerloss_prepare
    if [[ -n "${SKERRY_NEXTEST:-}" ]] && cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --no-fail-fast "${threads[@]}" || rc=$?
        powerloss_report
        echo "---- doc tests"
        cargo test --doc
        return "$rc"
    fi
    cargo test --no-fail-fast -- "${threads[@]}" || rc=$?
    powerloss_report
    return "$rc"
}

# tests/powerloss.rs mounts a FUSE filesystem (tests/powerfs, pure Rust: root mounts it itself,
# another user through fusermount3). Where it cannot (no usable /dev/fuse, not permitted), its
# tests return early and name themselves in $SKERRY_POWERLOSS_SKIPS, said loudly here; a
# failure to mount is never a failed test, a lost write always is.
powerloss_prepare() {
    export SKERRY_POWERLOSS_SKIPS="$TARGET_DIR/powerloss-skips.txt"
    rm -f "$SKERRY_POWERLOSS_SKIPS"
}

powerloss_report() {
    local mnt
    if [[ -s "$SKERRY_POWERLOSS_SKIPS" ]]; then
        echo
        echo "!!!! SKIPPED: the power-loss tests (tests/powerloss.rs) could not mount FUSE here:"
        sed 's/^/!!!!   /' "$SKERRY_POWERLOSS_SKIPS"
    else
        echo "power-loss tests (tests/powerloss.rs): ran on FUSE"
    fi
    # A test process that died with its filesystem mounted leaves a dead mount ("Transport
    # endpoint is not connected"); only those are unmounted, never a live one.
    for mnt in $(awk '$1 == "skerry-powerfs" { print $2 }' /proc/mounts 2>/dev/null); do
        if ! stat "$mnt" >/dev/null 2>&1; then
            umount -l "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null || true
        fi
    done
}

vendor_tests() {
    local rc=0
    CARGO_TARGET_DIR="$TARGET_DIR/vendor-tiny_http" cargo test --manifest-path vendor/tiny_http/Cargo.toml || rc=1
    CARGO_TARGET_DIR="$TARGET_DIR/vendor-fjall" cargo test --manifest-path vendor/fjall/Cargo.toml || rc=1
    return "$rc"
}

# The static aarch64 binary (edge boxes) builds and runs: scripts/release.sh with the dev
# profile (unoptimised, to keep CI short), its --version under qemu-aarch64.
cross_build() {
    # What the build needs from outside crates.io: the rustup target (static.rust-lang.org) and
    # cargo-zigbuild with Zig (PyPI). If a machine cannot fetch them, say so loudly and skip;
    # a build or check that fails once they are there fails the section.
    if ! rustup target list --installed | grep -qx aarch64-unknown-linux-musl \
        && ! rustup target add aarch64-unknown-linux-musl; then
        echo "!!!! SKIPPED: cannot install the aarch64-unknown-linux-musl target (rustup's server unreachable?)"
        return 0
    fi
    if ! command -v cargo-zigbuild >/dev/null 2>&1 || ! python3 -c 'import ziglang' 2>/dev/null; then
        python3 -m pip install --quiet cargo-zigbuild ziglang \
            || python3 -m pip install --quiet --user --break-system-packages cargo-zigbuild ziglang \
            || { echo "!!!! SKIPPED: cannot install cargo-zigbuild and ziglang from PyPI"; return 0; }
        export PATH="$HOME/.local/bin:$PATH"
        hash -r
    fi
    RELEASE_PROFILE=dev scripts/release.sh aarch64
}

shell_tests() {
    if [[ ! -x "$TARGET_DIR/release/skerry" ]]; then
        echo "error: no release binary at $TARGET_DIR/release/skerry" >&2
        return 1
    fi
    SKERRY_BIN="$TARGET_DIR/release/skerry" bash tests/shell/run_all.sh
}

# The short chaos run (issue 9): the default seed and length of scripts/chaos.sh against the
# release binary; it stops its nodes and removes its folder itself, also on failure, and leaves
# the client log and summary in target/chaos/.
chaos_run() {
    if [[ ! -x "$TARGET_DIR/release/skerry" ]]; then
        echo "error: no release binary at $TARGET_DIR/release/skerry" >&2
        return 1
    fi
    SKERRY_BIN="$TARGET_DIR/release/skerry" scripts/chaos.sh
}

# ---------------------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck disable=SC1091
    source "$HOME/.cargo/env"
fi
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
TARGET_DIR="${TARGET_DIR:-${CARGO_TARGET_DIR:-$REPO/target}}"

LAST_RC=0
run_section setup "toolchain and tools" setup
((LAST_RC == 0)) || exit 1
run_section fmt "cargo fmt --check" fmt
run_section clippy "cargo clippy --all-targets -- -D warnings" clippy
run_section build "cargo build --release" build
((LAST_RC == 0)) || exit 1
run_section rust "unit, integration and doc tests" rust_tests
run_section vendor "vendor/tiny_http and vendor/fjall tests" vendor_tests
run_section shell "shell tests (tests/shell/run_all.sh)" shell_tests
run_section chaos "short chaos run (scripts/chaos.sh, G1-G6)" chaos_run
run_section cross "static aarch64 build (scripts/release.sh)" cross_build
((${#FAILED[@]} == 0)) || exit 1
