#!/usr/bin/env bash
# Build the ext4 test disk and print its path; chatter goes to stderr.
#
#   build.sh test-disk   -> .../test-disk.ext4 (64 MiB, ext4, made with
#                           mkfs.ext4 -d from a directory holding /token)
#
# /token holds TOKEN below; scenarios copy the image before each use (a
# guest writes to it) and read it back with a loop mount. Cached under
# $MERCURY_CACHE/test-disk/<key>/ (key: a hash of this script and the
# e2fsprogs version).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${MERCURY_CACHE:-$HOME/.cache/mercury}/test-disk
log() { echo "test-disk: $*" >&2; }
# shellcheck source=../lib.sh
. "$here/../lib.sh"
exec 3>&1 1>&2

TOKEN="mercury-test-disk-token-7f3a"
SIZE_MIB=64

command -v mkfs.ext4 >/dev/null || apt_install e2fsprogs
ver=$(dpkg-query -W -f='${Version}' e2fsprogs 2>/dev/null || echo unknown)
key=$( { sha256sum "$0" | cut -d' ' -f1; echo "e2fsprogs=$ver"; } | sha256sum | cut -c1-16)
artifact=$cache/$key/test-disk.ext4
if [ -f "$artifact" ]; then
  log "cached (key $key)"
  echo "$artifact" >&3
  exit 0
fi
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/root" "$tmp/out"
printf '%s\n' "$TOKEN" >"$tmp/root/token"
# Fixed UUID and timestamps keep the image the same from one build to the next.
E2FSPROGS_FAKE_TIME=1700000000 mkfs.ext4 -q -F -L mercury-test -U 6d657263-7572-7900-0000-000000000001 \
  -E root_owner=0:0 -d "$tmp/root" "$tmp/out/test-disk.ext4" "${SIZE_MIB}M"
rm -rf "${cache:?}/$key"
mv -T "$tmp/out" "$cache/$key"
log "built $artifact"
echo "$artifact" >&3
