# shellcheck shell=bash
# Sourced by scripts/setup.sh and scripts/lock: which Python alvh is set up with, so the
# lock files are made with the interpreter the set-up then installs them into.

_alvh_python_ok() {
    command -v "$1" >/dev/null 2>&1 \
        && "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null
}

# Prints $ALVH_PYTHON if it is set (returning 1 if it is not Python >= 3.11), otherwise
# the first of python3.13, python3.12, python3.11, python3 that runs and is >= 3.11 (a
# pyenv shim of a version that is not selected exists but does not run). Returns 1,
# printing nothing, when there is none.
alvh_find_python() {
    local cand
    if [ -n "${ALVH_PYTHON:-}" ]; then
        _alvh_python_ok "$ALVH_PYTHON" || return 1
        printf '%s\n' "$ALVH_PYTHON"
        return 0
    fi
    for cand in python3.13 python3.12 python3.11 python3; do
        if _alvh_python_ok "$cand"; then
            printf '%s\n' "$cand"
            return 0
        fi
    done
    return 1
}
