#!/usr/bin/env bash
# Install what the suite needs, only what is missing (idempotent). Run as root on Debian.
#   system: iproute2 (ip netns exec), util-linux (setpriv), gcc + libc headers, Go, chromium
#   python: the dependencies listed in pyproject.toml
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v ip >/dev/null || need_apt+=(iproute2)
command -v setpriv >/dev/null || need_apt+=(util-linux)
command -v gcc >/dev/null || need_apt+=(gcc libc6-dev)
if ! command -v go >/dev/null && [ ! -x /usr/local/go/bin/go ]; then need_apt+=(golang-go); fi
command -v chromium >/dev/null || need_apt+=(chromium)   # renders the --html page in a test
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
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

# Go's module for the Go agent (golang.org/x/sys), fetched once into the module cache.
GO=$(command -v go || echo /usr/local/go/bin/go)
(cd targets/go && "$GO" mod download)
echo "setup: ok"
