#!/usr/bin/env bash
# Install what the suite needs, only what is missing (idempotent). Run as root.
#   system: iproute2 (ip, tc: the suite's own tests read state back with them), util-linux (setpriv:
#           the Docker runner, the kernel runs), gcc + libc headers (the agents' launcher and the C
#           agent, static), Go, a JDK (Java agent), Node.js (Node agent), Rust (Rust agent: cargo fetches its
#           crates once), chromium (renders the --html page in a test), user-mode-linux and kmod
#           (Linux 6.1 as a process: .ci/run's kernel comparison)
#   python: the dependencies listed in pyproject.toml
# It knows Debian (12 and later) and Ubuntu (22.04 and later, as on GitHub's runners, which already
# carry a JDK, Node, Rust and Chrome): it checks for each tool first and installs only what is missing,
# by the distribution's own package names. On another distribution it names what to install by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck disable=SC1091
. /etc/os-release 2>/dev/null || true
distro="${ID:-unknown}"
case "$distro" in
  debian|ubuntu) ;;
  *)
    case " ${ID_LIKE:-} " in
      *" debian "*|*" ubuntu "*) distro=debian ;;
    esac
    ;;
esac

have() { command -v "$1" >/dev/null 2>&1 || [ -x "$2" ]; }

need_apt=()
have ip /sbin/ip || need_apt+=(iproute2)
have setpriv /usr/bin/setpriv || need_apt+=(util-linux)
have gcc /usr/bin/gcc || need_apt+=(gcc)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -e /usr/lib/libc.a ] || need_apt+=(libc6-dev)
have go /usr/local/go/bin/go || need_apt+=(golang-go)
have javac /usr/bin/javac || need_apt+=(default-jdk-headless)
have node /usr/bin/node || need_apt+=(nodejs)
have cargo "$HOME/.cargo/bin/cargo" || need_apt+=(cargo)
# .ci/run compares the host's kernel with Linux 6.1 run by user-mode-linux (ci/kernel-matrix.sh); kmod
# gives the guest modprobe (and depmod, for the kernels `python3 -m conformance kernel` fetches).
have linux.uml /usr/bin/linux.uml || need_apt+=(user-mode-linux)
have depmod /sbin/depmod || need_apt+=(kmod)
if ! have chromium /usr/bin/chromium && ! have google-chrome /usr/bin/google-chrome; then
  # Debian ships chromium as a package; on Ubuntu it is a snap (the runners carry google-chrome).
  [ "$distro" = debian ] && need_apt+=(chromium)
fi

if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$distro" != debian ] && [ "$distro" != ubuntu ]; then
    echo "setup: ${PRETTY_NAME:-this distribution} is not one setup knows (Debian, Ubuntu);" \
         "install by hand: ${need_apt[*]} (Debian package names)" >&2
    exit 1
  fi
  echo "setup: installing ${need_apt[*]} (${PRETTY_NAME:-$distro})"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

PY=${PYTHON:-python3}
if ! "$PY" - <<'PYEOF' 2>/dev/null
import importlib.metadata as md, tomllib, re, sys
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
for dep in deps:
    md.version(re.split(r"[<>=!~ \[]", dep)[0])
import pyroute2
assert pyroute2.__version__.startswith("0.9")
PYEOF
then
  echo "setup: installing the Python dependencies from pyproject.toml"
  "$PY" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml","rb"))["project"]["dependencies"]))' \
    | xargs "$PY" -m pip install -q --root-user-action=ignore --disable-pip-version-check
fi

# Modules and crates the Go and Rust agents build from, fetched once into their caches
# (the builds themselves run offline).
GO=$(command -v go || echo /usr/local/go/bin/go)
(cd targets/go && "$GO" mod download)
(cd targets/netstack && "$GO" mod download)  # gVisor's netstack (about 110 MB): the netstack agent
CARGO=$(command -v cargo || echo "$HOME/.cargo/bin/cargo")
PATH="$(dirname "$CARGO"):$PATH" "$CARGO" fetch --locked --manifest-path targets/rust/Cargo.toml -q
echo "setup: ok"
