#!/usr/bin/env bash
# Idempotent: the real LiveKit server and LiveKit SIP, built from pinned releases through the Go
# module proxy into a per-machine cache, and linked into one bin directory that
# `switchboard up --livekit` and the SIP tests look in (SWITCHBOARD_LIVEKIT_BIN_DIR).
#
# `go install module@version` refuses both modules (their go.mod files carry replace directives),
# so each is fetched with `go mod download`, copied out of the read-only module cache and built
# in place as a main module. A cached binary is kept: a re-run costs two `test -x`.
#
# Pins: livekit-server v1.13.5 is the newest release whose dependencies are all on the module
# proxy (v1.13.6 and later replace pion's webrtc/ice/dtls with LiveKit forks the proxy refuses);
# livekit/sip v1.8.0 is the newest tag the proxy serves. They speak over Redis (psrpc), so the
# two are paired by protocol version, not by release number.
set -euo pipefail

LIVEKIT_SERVER=(github.com/livekit/livekit-server@v1.13.5 ./cmd/server livekit-server)
LIVEKIT_SIP=(github.com/livekit/sip@v1.8.0 ./cmd/livekit-sip livekit-sip)
CACHE="${SWITCHBOARD_CACHE_DIR:-$HOME/.cache/switchboard}/livekit"
BIN="${SWITCHBOARD_LIVEKIT_BIN_DIR:-$CACHE/bin}"
# livekit-sip is cgo: Opus, Ogg/Opus files and the SoX resampler.
APT_PACKAGES=(libopus-dev libopusfile-dev libsoxr-dev pkg-config gcc)

export PATH="$PATH:/usr/local/go/bin"
if ! command -v go >/dev/null; then
    echo "install_livekit: no Go toolchain (go >= 1.26): the LiveKit SIP tests will be skipped" >&2
    exit 0
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install_livekit: installing ${missing[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

build() {
    local module="$1" package="$2" name="$3"
    local version="${module##*@}"
    local target="$CACHE/$name-$version/$name"
    mkdir -p "$BIN"
    if [ ! -x "$target" ]; then
        echo "install_livekit: building $name $version (a few minutes, once per machine)"
        local started=$SECONDS src dir
        dir=$(go mod download -json "$module" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
        [ -n "$dir" ] || { echo "install_livekit: go mod download $module failed" >&2; exit 1; }
        src=$(mktemp -d)
        cp -r "$dir/." "$src"
        chmod -R u+w "$src"
        mkdir -p "$(dirname "$target")"
        (cd "$src" && CGO_ENABLED=1 GOFLAGS=-buildvcs=false go build -trimpath -o "$target.tmp" "$package")
        mv "$target.tmp" "$target"
        rm -rf "$src"
        echo "install_livekit: $name $version built in $((SECONDS - started)) s"
    fi
    ln -sfn "$target" "$BIN/$name"
}

build "${LIVEKIT_SERVER[@]}"
build "${LIVEKIT_SIP[@]}"
