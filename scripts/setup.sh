# shellcheck shell=bash
# Sourced by scripts/demo and scripts/test: idempotent set-up of everything alvh's
# development needs on a Debian/Ubuntu machine. Re-running is fast: each step is skipped
# when the stamp of its inputs (lock files, sources) has not changed.
#
# Two parts:
# - Python (always): .venv from requirements-dev.lock (the runtime closure + tests,
#   linters, the demo's needs; see scripts/lock), alvh installed editable, and numba's
#   compiled loops;
# - integration (alvh_setup_integration): npm packages (anvil, Uniswap and OpenZeppelin
#   artifacts), Mosquitto, openssl and, for the tests, Chromium. It runs here unless
#   ALVH_SETUP_INTEGRATION=0; scripts/test sets that and calls it itself only when the
#   pytest marker expression can select integration tests.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. "$ROOT/scripts/python.sh"

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
PY="$(alvh_find_python)" \
    || die "Python >= 3.11 not found (or \$ALVH_PYTHON is not one); install it with: sudo apt-get install -y python3 python3-venv"

# multicall is only read for Multicall3's canonical runtime bytecode (the demo and the
# integration tests deploy it on anvil); its own dependencies pin an old web3 and
# faster-eth-abi, so it is installed without them and is not in the lock files.
MULTICALL_PIN="multicall==0.15.2"
py_stamp="$( { cat requirements-dev.lock requirements.lock pyproject.toml; echo "$MULTICALL_PIN"; } \
    | sha256sum | cut -c1-16)"
if [ ! -x .venv/bin/python ]; then
    log "creating .venv with $PY"
    "$PY" -m venv .venv || die "could not create .venv; install venv with: sudo apt-get install -y python3-venv"
fi
if [ "$(cat .venv/.alvh-stamp 2>/dev/null)" != "$py_stamp" ]; then
    log "installing Python dependencies (requirements-dev.lock)"
    pip_log="$(mktemp)"
    pipi() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@" >"$pip_log" 2>&1 \
        || { grep -v '^WARNING: Location' "$pip_log" | tail -n 20 >&2; die "pip install $* failed"; }; }
    pipi -r requirements-dev.lock
    pipi --no-deps "$MULTICALL_PIN"
    pipi --no-deps -e . --config-settings editable_mode=compat
    rm -f "$pip_log"
    echo "$py_stamp" > .venv/.alvh-stamp
fi

# --- The compiled loops (numba): compiled once into numba's cache ------------
# (the __pycache__ folders under rules/, or $NUMBA_CACHE_DIR), again only when the rules
# sources change.
kernels_stamp="$(find rules -name '*.py' -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-16)"
if [ "$(cat .venv/.alvh-kernels-stamp 2>/dev/null)" != "$kernels_stamp" ]; then
    log "compiling the numba loops"
    .venv/bin/python -c 'from rules.pipeline import compile_kernels; compile_kernels()' \
        || die "compiling the loops with numba failed (see the error above)"
    echo "$kernels_stamp" > .venv/.alvh-kernels-stamp
fi

export PATH="$ROOT/.venv/bin:$PATH"

# --- Integration: anvil, the contract artifacts, Mosquitto (and Chromium) ------
alvh_setup_integration() {
    command -v npm >/dev/null 2>&1 || die "npm is missing; install Node.js with: sudo apt-get install -y nodejs npm"
    local npm_stamp
    npm_stamp="$(sha256sum package-lock.json | cut -c1-16)"
    if [ "$(cat node_modules/.alvh-stamp 2>/dev/null)" != "$npm_stamp" ]; then
        log "installing npm packages (npm ci)"
        npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null || die "npm ci failed"
        echo "$npm_stamp" > node_modules/.alvh-stamp
    fi
    [ -x node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil ] \
        || die "anvil binary missing in node_modules/@foundry-rs/anvil-linux-amd64 (only linux x86_64 is supported)"

    need_apt mosquitto mosquitto mosquitto-clients
    need_apt mosquitto_sub mosquitto-clients
    need_apt openssl openssl
    # The test suite also drives a real headless browser against the dashboard.
    if [ "${ALVH_SETUP_FOR_TESTS:-0}" = 1 ]; then
        need_apt chromium chromium
    fi
}

if [ "${ALVH_SETUP_INTEGRATION:-1}" != 0 ]; then
    alvh_setup_integration
fi
