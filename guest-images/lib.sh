# Shared helpers for the guest-image recipes (sourced, not run). The caller
# defines log() (its own prefix, to stderr) before sourcing; die() uses it.
# Everything here installs or fetches Debian packages non-interactively, as
# root (or through `sudo -n`), updating the apt lists at most once per run.
# shellcheck shell=bash

export DEBIAN_FRONTEND=noninteractive

die() { log "error: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else
    die "need root to run: $*"; fi
}

apt_lists_empty() { ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; }

apt_update_once() {
  [ -n "${apt_updated:-}" ] && return 0
  log "apt-get update"
  as_root apt-get update -qq >&2
  apt_updated=1
}

# apt_install PKG...: a failure may be stale lists, so update and retry once.
apt_install() {
  apt_lists_empty && apt_update_once
  as_root apt-get install -y -qq --no-install-recommends "$@" >&2 && return 0
  apt_update_once
  as_root apt-get install -y -qq --no-install-recommends "$@" >&2
}

# apt_candidate PKG: the version apt would download now (updating the lists
# first when there are none or they know no such package).
apt_candidate() {
  local v
  apt_lists_empty && apt_update_once
  v=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')
  if [ -z "$v" ] || [ "$v" = "(none)" ]; then
    apt_update_once
    v=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')
  fi
  if [ -z "$v" ] || [ "$v" = "(none)" ]; then die "apt knows no $1"; fi
  echo "$v"
}

# apt_fetch PKG VER DEST: download PKG=VER once, atomically, to the file DEST.
apt_fetch() {
  local pkg=$1 ver=$2 dest=$3 dir
  [ -f "$dest" ] && return 0
  mkdir -p "$(dirname "$dest")"
  dir=$(mktemp -d "$(dirname "$dest")/.download.XXXXXX")
  log "downloading $pkg=$ver"
  if (cd "$dir" && apt-get download "$pkg=$ver" >&2) ||
     { apt_update_once; (cd "$dir" && apt-get download "$pkg=$ver" >&2); }; then
    mv "$dir"/*.deb "$dest"
    rm -rf "$dir"
  else
    rm -rf "$dir"
    die "apt-get download $pkg=$ver failed"
  fi
}
