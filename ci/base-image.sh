#!/usr/bin/env bash
# Build the local base image tcc-suite-base:bookworm for ci/Dockerfile without pulling anything:
# debootstrap a Debian root filesystem (from this machine's apt source) and `docker import` it.
set -euo pipefail
command -v debootstrap >/dev/null || apt-get install -y -qq --no-install-recommends debootstrap
mirror=$(sed -n 's#^URIs: *\(.*/debian\)$#\1#p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
work=$(mktemp -d /var/tmp/tcc-base-XXXXXX)
trap 'rm -rf "$work"' EXIT
debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,iproute2,util-linux,gcc,libc6-dev,golang-go,ca-certificates \
  bookworm "$work/rootfs" ${mirror:+"$mirror"}
tar -C "$work/rootfs" -c . | docker import - tcc-suite-base:bookworm
echo "built tcc-suite-base:bookworm"
