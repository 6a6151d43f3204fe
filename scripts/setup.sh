# shellcheck shell=bash
# Sourced by scripts/demo and scripts/test: idempotent set-up of everything alvh
# needs on a Debian/Ubuntu machine. Re-running is fast: each step is skipped when
# the stamp of its inputs (lock files) has not changed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf 'alvh-setup: %s\n' "$*" >&2; }
die() { printf 'alvh-setup: error: %s\n' "$*" >&2; exit 1; }

need_apt() {
    # $1 = command to look for, $2.. = Debian packages providing it
    local cmd="$1"; shift
    if command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || [ -x "/usr/bin/$cmd" ]; then
        return 0
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing $* with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; } \
            || die "apt-get install $* failed"
    else
        die "$cmd is missing; install it with: sudo apt-get install -y $*"
    fi
}

# --- Python ---------------------------------------------------------------
PY="${ALVH_PYTHON:-}"
if [ -z "$PY" ]; then
    for cand in python3.13 python3.12 python3.11 python3; do
        if command -v "$cand" >/dev/null 2>&1 \
            && "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            PY="$cand"; break
        fi
    done
fi
[ -n "$PY" ] || die "Python >= 3.11 not found; install it with: sudo apt-get install -y python3 python3-venv"

py_stamp="$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -x .venv/bin/python ]; then
    log "creating .venv with $PY"
    "$PY" -m venv .venv || die "could not create .venv; install venv with: sudo apt-get install -y python3-venv"
fi
if [ "$(cat .venv/.alvh-stamp 2>/dev/null)" != "$py_stamp" ]; then
    log "installing Python dependencies (requirements.lock)"
    pip_log="$(mktemp)"
    pipi() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@" >"$pip_log" 2>&1 \
        || { grep -v '^WARNING: Location' "$pip_log" | tail -n 20 >&2; die "pip install $* failed"; }; }
    pipi -r requirements.lock
    # multicall is only read for Multicall3's canonical runtime bytecode; its own
    # dependencies would downgrade web3, so it is installed without them.
    pipi --no-deps multicall==0.15.2
    pipi --no-deps -e . --config-settings editable_mode=compat
    rm -f "$pip_log"
    echo "$py_stamp" > .venv/.alvh-stamp
fi

# --- The backtest's compiled loops (numba): compiled once into numba's cache --
# (rules/__pycache__), again only when the rules sources change.
kernels_stamp="$(find rules -name '*.py' -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-16)"
if [ "$(cat .venv/.alvh-kernels-stamp 2>/dev/null)" != "$kernels_stamp" ]; then
    log "compiling the backtest's loops (numba)"
    .venv/bin/python -c 'from rules.pipeline import compile_kernels; compile_kernels()' \
        || die "compiling the backtest's loops with numba failed (see the error above)"
    echo "$kernels_stamp" > .venv/.alvh-kernels-stamp
fi

# --- Node packages: anvil and the compiled Uniswap / OpenZeppelin artifacts --
command -v npm >/dev/null 2>&1 || die "npm is missing; install Node.js with: sudo apt-get install -y nodejs npm"
npm_stamp="$(sha256sum package-lock.json | cut -c1-16)"
if [ "$(cat node_modules/.alvh-stamp 2>/dev/null)" != "$npm_stamp" ]; then
    log "installing npm packages (npm ci)"
    npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null || die "npm ci failed"
    echo "$npm_stamp" > node_modules/.alvh-stamp
fi
[ -x node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil ] \
    || die "anvil binary missing in node_modules/@foundry-rs/anvil-linux-amd64 (only linux x86_64 is supported)"

# --- Mosquitto ------------------------------------------------------------
need_apt mosquitto mosquitto mosquitto-clients
need_apt mosquitto_sub mosquitto-clients
need_apt openssl openssl
# The test suite also drives a real headless browser against the dashboard.
if [ "${ALVH_SETUP_FOR_TESTS:-0}" = 1 ]; then
    need_apt chromium chromium
fi

export PATH="$ROOT/.venv/bin:$PATH"
