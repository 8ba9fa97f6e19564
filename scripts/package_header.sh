#!/bin/sh
# blixard @VERSION@ (Deno @DENO_VERSION@): the Blixard node agent in one self-extracting file.
#
# After this shell header comes the payload: a gzip'd tar of the Deno runtime,
# the agent's code and the npm packages it loads. The first run on a host
# checks the payload's SHA-256, unpacks it into a cache directory (to a
# temporary directory, then one rename, so concurrent first runs never see a
# half-unpacked tree), and every run then starts the agent from there:
#
#   $BLIXARD_CACHE_DIR                    if set (an absolute path)
#   $CACHE_DIRECTORY                      systemd's CacheDirectory=
#   ${XDG_CACHE_HOME:-$HOME/.cache}/blixard
#   /var/cache/blixard                    with no HOME (or HOME=/)
#
# and in it <version>-<first 16 hex digits of the digest>/. Later runs use
# that directory without reading the payload again: nothing runs that was not
# checked. A payload whose digest does not match is refused.
#
# Needs only what every Linux x86_64 glibc host has: sh, tar, gzip, sha256sum.
# Built by scripts/package.ts from scripts/package_header.sh; the values below
# are filled in there.
set -eu

version='@VERSION@'
sha256='@SHA256@'
tree='@VERSION@-@SHA256_PREFIX@'
offset=@OFFSET@
size=@SIZE@

die() {
  printf 'blixard: %s\n' "$*" >&2
  exit 1
}

xdg=${XDG_CACHE_HOME:-}
if [ -n "${BLIXARD_CACHE_DIR:-}" ]; then
  case $BLIXARD_CACHE_DIR in
  /*) base=$BLIXARD_CACHE_DIR ;;
  *) die "BLIXARD_CACHE_DIR=$BLIXARD_CACHE_DIR: expected an absolute path" ;;
  esac
elif [ -n "${CACHE_DIRECTORY:-}" ]; then
  base=${CACHE_DIRECTORY%%:*}
elif [ "${xdg#/}" != "$xdg" ]; then
  # Only an absolute one: the XDG spec says a relative one is to be ignored.
  base=$xdg/blixard
elif [ -n "${HOME:-}" ] && [ "$HOME" != / ]; then
  base=$HOME/.cache/blixard
else
  base=/var/cache/blixard
fi
dir=$base/$tree

# Only the first run does more than this file's own shell: a warm start forks
# nothing before it execs the runtime.
unpack() {
  case "$(uname -s)/$(uname -m)" in
  Linux/x86_64) ;;
  *) die "this file runs on Linux x86_64 with glibc; this host is $(uname -s) $(uname -m)" ;;
  esac
  [ -e /lib64/ld-linux-x86-64.so.2 ] ||
    die "this file needs glibc, and this host has no /lib64/ld-linux-x86-64.so.2 (a musl system?)"
  self=$0
  [ -r "$self" ] || die "cannot read this file ($self) to unpack it"
  for tool in tar gzip sha256sum tail; do
    command -v "$tool" >/dev/null 2>&1 || die "the first run needs $tool on PATH to unpack; PATH=$PATH"
  done
  expected=$((offset - 1 + size))
  actual=$(wc -c <"$self" | tr -d ' ')
  [ "$actual" -eq "$expected" ] ||
    die "$self is $actual bytes, expected $expected: it was cut short or appended to; copy it again"
  got=$(tail -c +"$offset" "$self" | sha256sum | cut -d ' ' -f 1)
  [ "$got" = "$sha256" ] ||
    die "$self is corrupted: its payload's SHA-256 is $got, expected $sha256; refusing to run it, copy it again"
  mkdir -p "$base" 2>/dev/null ||
    die "cannot create the cache directory $base; set BLIXARD_CACHE_DIR to a writable directory"
  tmp=$base/.unpack-$version-$$
  rm -rf "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  trap 'exit 129' HUP
  trap 'exit 130' INT
  trap 'exit 143' TERM
  mkdir "$tmp" 2>/dev/null ||
    die "cannot write to the cache directory $base; set BLIXARD_CACHE_DIR to a writable directory"
  # -o: the unpacked files belong to whoever runs this, also as root.
  tail -c +"$offset" "$self" | tar -xzof - -C "$tmp" ||
    die "unpacking into $tmp failed (is $base full?)"
  # A rename onto an existing directory fails, so of concurrent first runs one
  # wins and the others use its tree.
  if mv -T "$tmp" "$dir" 2>/dev/null; then
    printf 'blixard: first run of %s: payload checked, unpacked into %s\n' "$version" "$dir" >&2
  elif [ ! -x "$dir/deno" ]; then
    die "cannot move $tmp to $dir; if $dir is left from an interrupted run, remove it"
  fi
  rm -rf "$tmp"
  trap - EXIT HUP INT TERM
}

[ -x "$dir/deno" ] || unpack

# No network at start: no update check, no remote modules, npm packages only
# from the bundled node_modules, no lock file to write. -A: the agent loads a
# native addon (Iroh), and native code is outside Deno's permission checks
# anyway; confine the process with the systemd unit instead.
export DENO_DIR="$dir/deno_dir" DENO_NO_UPDATE_CHECK=1
exec "$dir/deno" run --allow-all --no-remote --cached-only --no-lock \
  --node-modules-dir=manual --config="$dir/app/deno.json" "$dir/app/src/cli/main.ts" "$@"
exit 1
