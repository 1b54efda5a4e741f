#!/usr/bin/env bash
# Makes sure this machine has what `make run` / `make test` need, so the two
# README commands work on a fresh Debian machine with the language toolchains
# (Rust, Go, Node, Python) installed:
#
#   scripts/setup.sh run     cc and make (the demo is C)
#   scripts/setup.sh test    also valgrind, pkg-config, cmake, openssl, git,
#                            binutils, python3 venv and pip, clippy and rustfmt,
#                            nats-server (built with Go into a cache), and the
#                            Go, Node and Python toolchains
#
# Only checks when everything is present (a few `command -v`, no network).
# Missing system packages are installed with apt-get when running as root;
# otherwise (or without apt-get) it names exactly what is missing and how to
# get it, and fails. The language toolchains themselves are never installed
# here: it names them.
set -euo pipefail
mode="${1:-test}"
case "$mode" in
    run | test) ;;
    *) echo "usage: $0 run|test" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."

# command:debian-package pairs, per mode.
apt_tools=(cc:build-essential c++:build-essential make:make)
if [ "$mode" = test ]; then
    apt_tools+=(valgrind:valgrind pkg-config:pkg-config cmake:cmake openssl:openssl
                git:git readelf:binutils nm:binutils strip:binutils objdump:binutils
                chromium:chromium)
fi
missing_pkgs=()
missing_cmds=()
for pair in "${apt_tools[@]}"; do
    cmd="${pair%%:*}" pkg="${pair##*:}"
    if ! command -v "$cmd" >/dev/null 2>&1; then
        missing_cmds+=("$cmd")
        case " ${missing_pkgs[*]:-} " in *" $pkg "*) ;; *) missing_pkgs+=("$pkg") ;; esac
    fi
done

# The language toolchains: named, not installed (rustup, go.dev, nodejs.org,
# python.org or the distribution's packages are the user's choice).
toolchains=(cargo:"Rust (https://rustup.rs)")
if [ "$mode" = test ]; then
    toolchains+=(go:"Go 1.22+ (https://go.dev/dl)" node:"Node.js 18+ (https://nodejs.org)"
                 npm:"npm (comes with Node.js)" python3:"Python 3.9+")
fi
missing_toolchains=()
for pair in "${toolchains[@]}"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing_toolchains+=("${pair%%:*}: ${pair#*:}")
done

# Debian's python3 comes without pip and venv (the Python tests and the
# packaging tests need both).
if [ "$mode" = test ] && command -v python3 >/dev/null 2>&1; then
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        missing_cmds+=("python3 -m venv"); missing_pkgs+=(python3-venv)
    fi
    if ! python3 -m pip --version >/dev/null 2>&1; then
        missing_cmds+=("python3 -m pip"); missing_pkgs+=(python3-pip)
    fi
fi

if [ "${#missing_pkgs[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing ${missing_pkgs[*]} (for ${missing_cmds[*]})"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" >/dev/null
    else
        echo "setup: make $mode needs ${missing_cmds[*]}, which this machine lacks." >&2
        if command -v apt-get >/dev/null 2>&1; then
            echo "setup: install them with:  sudo apt-get install ${missing_pkgs[*]}" >&2
        else
            echo "setup: install them with your package manager (Debian names: ${missing_pkgs[*]})" >&2
        fi
        exit 1
    fi
fi

if [ "${#missing_toolchains[@]}" -gt 0 ]; then
    echo "setup: make $mode needs these toolchains, which are not on PATH:" >&2
    printf 'setup:   %s\n' "${missing_toolchains[@]}" >&2
    exit 1
fi

if [ "$mode" = test ]; then
    # The nats:// engine's tests run nats-server: built once from the Go module
    # proxy into a cache (scripts/nats-server.sh), then only found there.
    if [ -x scripts/nats-server.sh ]; then
        scripts/nats-server.sh >/dev/null || { echo "setup: cannot provide nats-server (scripts/nats-server.sh)" >&2; exit 1; }
    fi
    # make lint runs clippy and rustfmt: rustup components, not on every install.
    if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
        if command -v rustup >/dev/null 2>&1; then
            echo "setup: adding the rustup components clippy and rustfmt"
            rustup component add clippy rustfmt
        else
            echo "setup: make test needs cargo fmt and cargo clippy (rustfmt, clippy)" >&2
            exit 1
        fi
    fi
fi
