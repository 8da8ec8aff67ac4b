#!/usr/bin/env bash
# Run a command (the suite) without root, as gVisor's packetimpact does: inside a user namespace
# and a network namespace of its own, where the unprivileged caller is root. The suite's
# namespaces, veths and captures then live below that private network namespace.
#
#   bash ci/rootless.sh python3 -m pytest tests/cases --targets python
#
# Needs unprivileged user namespaces (user.max_user_namespaces > 0; on Debian/Ubuntu also
# kernel.unprivileged_userns_clone=1 where that knob exists, and no AppArmor restriction).
set -euo pipefail
if [ "$#" -eq 0 ]; then
  echo "usage: bash ci/rootless.sh COMMAND [ARG...]" >&2
  exit 2
fi
if [ "${TCC_ROOTLESS_INNER:-}" != 1 ]; then
  if ! unshare --user --map-root-user true 2>/dev/null; then
    echo "ci/rootless.sh: this machine does not allow unprivileged user namespaces; run the suite as root" >&2
    exit 1
  fi
  export TCC_ROOTLESS_INNER=1
  exec unshare --user --map-root-user --net --mount --propagation private --fork -- bash "$0" "$@"
fi
# Inside: root of a private user, network and mount namespace. A private /run gives /run/netns.
mount -t tmpfs -o mode=755 tcc-run /run
mkdir -p /run/netns
ip link set lo up
exec "$@"
