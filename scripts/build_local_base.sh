#!/usr/bin/env bash
# Build a local base image (Debian bookworm + Python 3.11 and venv, whose ensurepip brings pip into each
# venv) with debootstrap and import it into podman, for machines that cannot pull python:3.11-slim.
# Needs root, debootstrap and podman.
#   scripts/build_local_base.sh [IMAGE]        (default: localhost/debian-python:bookworm)
# Then: podman build --build-arg BASE_IMAGE=localhost/debian-python:bookworm ...
set -euo pipefail
IMAGE="${1:-localhost/debian-python:bookworm}"
PODMAN=(podman --storage-driver "${PODMAN_STORAGE_DRIVER:-vfs}")

if "${PODMAN[@]}" image exists "$IMAGE"; then
    echo "base image $IMAGE already present"
    exit 0
fi
ROOTFS="$(mktemp -d /tmp/gru-base-rootfs.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT
started=$SECONDS
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$ROOTFS" >"$ROOTFS.log" 2>&1 || { tail -20 "$ROOTFS.log"; rm -f "$ROOTFS.log"; exit 1; }
rm -f "$ROOTFS.log"
# Trim what a container never needs: apt lists and caches, docs, man pages, locales.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/* "$ROOTFS"/usr/share/doc/* \
       "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/locale/*
chmod 755 "$ROOTFS"   # mktemp made it 0700: it becomes the image's /, which every user must traverse
tar -C "$ROOTFS" -c . | "${PODMAN[@]}" import --quiet --change 'CMD ["python3"]' - "$IMAGE" >/dev/null
echo "built base image $IMAGE in $((SECONDS - started)) s"
