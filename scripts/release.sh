#!/usr/bin/env bash
# scripts/release.sh -- static release binaries of skerry for Linux (musl, no shared libraries):
# x86_64 and aarch64 (Raspberry-Pi-class edge boxes), each with a SHA-256 file.
#
#   scripts/release.sh                    # both targets
#   scripts/release.sh aarch64            # one (x86_64 | aarch64, or a full target triple)
#   RELEASE_PROFILE=dev scripts/release.sh aarch64   # a quick unoptimised cross build (CI)
# The default profile is `dist` (Cargo.toml: release + fat LTO, one codegen unit).
#
# Installs what it needs if missing: the rustup targets, and cargo-zigbuild with Zig as its
# cross linker and C compiler (both from PyPI: `pip install cargo-zigbuild ziglang`), because
# ring and mimalloc compile C for the target. Each binary is checked: statically linked, and
# `--version` runs (natively, or under qemu-user's qemu-aarch64 when Debian's qemu-user is
# installed; otherwise that check is skipped with a message).
# Output: target/release-artifacts/skerry-<version>-<target> and .sha256 beside it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PROFILE="${RELEASE_PROFILE:-dist}"
VERSION="$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)"
OUT="${CARGO_TARGET_DIR:-$REPO/target}/release-artifacts"
mkdir -p "$OUT"

targets=()
for t in "${@:-x86_64 aarch64}"; do
    for one in $t; do
        case "$one" in
            x86_64) targets+=(x86_64-unknown-linux-musl) ;;
            aarch64) targets+=(aarch64-unknown-linux-musl) ;;
            *-*) targets+=("$one") ;;
            *) echo "unknown target '$one' (x86_64, aarch64 or a triple)" >&2; exit 2 ;;
        esac
    done
done

installed="$(rustup target list --installed)"
for t in "${targets[@]}"; do
    grep -qx "$t" <<<"$installed" || rustup target add "$t"
done
if ! command -v cargo-zigbuild >/dev/null 2>&1 || ! python3 -c 'import ziglang' 2>/dev/null; then
    echo "installing cargo-zigbuild and ziglang from PyPI"
    # A system Python that refuses global installs (PEP 668) gets a user install.
    python3 -m pip install --quiet cargo-zigbuild ziglang \
        || python3 -m pip install --quiet --user --break-system-packages cargo-zigbuild ziglang
    export PATH="$HOME/.local/bin:$PATH"
    hash -r
fi

for t in "${targets[@]}"; do
    echo "==> building skerry $VERSION for $t ($PROFILE)"
    cargo zigbuild --locked --profile "$PROFILE" --target "$t" --bin skerry
    dir="$([[ $PROFILE == dev ]] && echo debug || echo "$PROFILE")"
    bin="${CARGO_TARGET_DIR:-$REPO/target}/$t/$dir/skerry"
    art="$OUT/skerry-$VERSION-$t"
    cp "$bin" "$art"
    info="$(file "$art" 2>/dev/null || true)"
    echo "    $info"
    if [[ -n "$info" && "$info" != *"statically linked"* && "$info" != *"static-pie linked"* ]]; then
        echo "error: $art is not statically linked" >&2
        exit 1
    fi
    case "$t" in
        x86_64-*) "$art" --version ;;
        aarch64-*)
            if command -v qemu-aarch64 >/dev/null 2>&1; then
                qemu-aarch64 "$art" --version
            else
                echo "    qemu-aarch64 not installed (Debian: qemu-user): --version not run"
            fi
            ;;
    esac
    (cd "$OUT" && sha256sum "$(basename "$art")" >"$(basename "$art").sha256")
    echo "    $(cat "$art.sha256")"
done
echo "artifacts in $OUT"
