# Shared set-up for scripts/demo, scripts/test and scripts/dev-stack.
# Installs what is missing (Debian packages, the virtualenv and the project)
# and does nothing when everything is already in place.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV="$ROOT/.venv"

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

apt_install() {
    [ "$(id -u)" = 0 ] || die "missing Debian packages ($*); install them as root: apt-get install -y $*"
    # Debian's postgresql package would create and start a cluster on port
    # 5432; the stack runs its own throwaway clusters instead.
    mkdir -p /etc/postgresql-common
    [ -e /etc/postgresql-common/createcluster.conf ] ||
        echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
    echo "installing Debian packages: $*" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

ensure_system_packages() {
    local missing=()
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
    command -v psql >/dev/null || missing+=(postgresql-client)
    command -v setpriv >/dev/null || missing+=(util-linux)
    command -v useradd >/dev/null || missing+=(passwd)
    python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
    for pkg in "$@"; do
        command -v "$pkg" >/dev/null || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
}

# pip warns once per package about find-links folders a machine's pip.conf
# names but does not have; those lines say nothing about this project.
quiet_pip() { grep -v "^WARNING: Location '.*' is ignored" || true; }

ensure_venv() {
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "Python 3.11 or newer is required as python3 (found $(python3 --version 2>&1))"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" >&2
    local stamp
    stamp="$VENV/.agent-bridge-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
    if [ ! -e "$stamp" ]; then
        echo "installing agent-bridge and its dependencies into $VENV" >&2
        "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | quiet_pip >&2
        # setuptools reports every editable install with a 10-line banner;
        # the filter matches that warning's message only.
        PYTHONWARNINGS="ignore:Editable installation" \
            "$VENV/bin/python" -m pip install -q -e "$ROOT[dev]" 2>&1 | quiet_pip >&2
        rm -f "$VENV"/.agent-bridge-*
        touch "$stamp"
    fi
}

dev_stack() {
    PYTHONPATH="$ROOT/scripts${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/python" -m devstack "$@"
}
