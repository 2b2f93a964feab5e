#!/usr/bin/env bash
# Build a Debian bookworm base image with Python 3.11 without any container registry: debootstrap from the Debian
# mirror apt uses, then `docker import`. The Dockerfiles take it as PYTHON_IMAGE / BASE_IMAGE on machines that reach
# Debian's mirror and PyPI but no registry (scripts/compose-smoke.sh calls this when `docker pull` fails).
#
#   scripts/offline-base-image.sh [TAG]          # default TAG: local/python:3.11-bookworm; needs root, docker
#
# Environment: DEBIAN_MIRROR (default: the first Debian URI in /etc/apt/sources*), DOCKER (docker CLI command).
# The host's locally added CA certificates (/usr/local/share/ca-certificates) are copied in, so pip and apt inside
# builds trust an HTTPS proxy the host trusts. About 1 minute and 200 MB.
set -euo pipefail

TAG="${1:-local/python:3.11-bookworm}"
DOCKER="${DOCKER:-docker}"

if [[ -z "${DEBIAN_MIRROR:-}" ]]; then
  DEBIAN_MIRROR="$(grep -rhE '^[[:space:]]*(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
    | grep -oE 'https?://[^ ]*/debian/?' | grep -v -- '-security' | head -n 1 || true)"
  DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }

rootfs="$(mktemp -d /tmp/aerplane-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT

echo "debootstrap bookworm from $DEBIAN_MIRROR into $rootfs" >&2
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates,curl \
  bookworm "$rootfs" "$DEBIAN_MIRROR" >&2
ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
# As in Debian's official images: services installed by apt do not start inside a build.
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
chmod 755 "$rootfs/usr/sbin/policy-rc.d"
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" update-ca-certificates >&2
fi
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb

tar -C "$rootfs" -c . | "$DOCKER" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["python"]' \
  - "$TAG" >&2
echo "$TAG"
