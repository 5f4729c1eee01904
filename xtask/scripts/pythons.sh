#!/usr/bin/env bash
# Provides CPython 3.14 and 3.15 for the tests without touching the system's
# packages: Debian unstable's binary packages, fetched with a private apt
# configuration and unpacked into target/pythons/3.X (one prefix per
# version), the interpreter pointed at the prefix's own loader and libraries.
# Idempotent: a prefix with a working interpreter is kept as it is.
# Usage: pythons.sh ROOT   (prints nothing; the log is ROOT/target/pythons/log)
set -euo pipefail
root=$1
top=$root/target/pythons
mkdir -p "$top"
log=$top/log
: >"$log"
exec 3>&2 2>>"$log" >>"$log"

versions=(3.14 3.15)
libs=(libc6 libexpat1 zlib1g libffi8 libssl3t64 libzstd1 liblzma5 libbz2-1.0
  libsqlite3-0 libncursesw6 libtinfo6 libreadline8t64 libuuid1 libmpdec4 libgcc-s1)

ready() { # the interpreter of prefix $1 runs threading, asyncio, ctypes, ssl...
  [ -x "$1/usr/bin/python$2" ] && [ -f "$1/usr/include/python$2/Python.h" ] &&
    "$1/usr/bin/python$2" -c 'import threading, asyncio, ctypes, concurrent.futures, multiprocessing, ssl, sqlite3, lzma, bz2' 2>/dev/null
}

missing=()
for v in "${versions[@]}"; do
  ready "$top/$v" "$v" || missing+=("$v")
done
[ ${#missing[@]} -eq 0 ] && exit 0

for t in apt-get dpkg patchelf; do
  if ! command -v $t >/dev/null; then
    apt-get install -y -qq patchelf || { echo "pythons: cannot install patchelf (see $log)" >&3; exit 1; }
  fi
done

apt=$top/apt
mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
cat >"$apt/sources.list" <<SRC
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian unstable main
SRC
opts=(-o "Dir::Etc::sourcelist=$apt/sources.list" -o Dir::Etc::sourceparts=/dev/null
  -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o Dir::State::status=/dev/null
  -o APT::Architecture=amd64 -o Debug::NoLocking=1)
if ! apt-get "${opts[@]}" update; then
  echo "pythons: apt-get update of Debian unstable failed (see $log)" >&3
  exit 1
fi
for v in "${missing[@]}"; do
  pkgs=("python$v" "python$v-minimal" "libpython$v-minimal" "libpython$v-stdlib" "libpython$v" "libpython$v-dev" "${libs[@]}")
  d=$apt/debs/$v
  rm -rf "$d" && mkdir -p "$d"
  if ! (cd "$d" && apt-get "${opts[@]}" download "${pkgs[@]}"); then
    echo "pythons: downloading CPython $v failed (see $log)" >&3
    exit 1
  fi
  p=$top/$v
  rm -rf "$p.tmp" && mkdir -p "$p.tmp"
  for deb in "$d"/*.deb; do dpkg -x "$deb" "$p.tmp"; done
  lib=$p/usr/lib/x86_64-linux-gnu
  # The prefix is final before patchelf: the loader path is absolute.
  rm -rf "$p" && mv "$p.tmp" "$p"
  # DT_RPATH, not RUNPATH: it also serves the extension modules' own
  # dependencies (_ssl needs the prefix's libcrypto, not the system's).
  patchelf --set-interpreter "$lib/ld-linux-x86-64.so.2" --force-rpath --set-rpath "$lib" "$p/usr/bin/python$v"
  if ! ready "$p" "$v"; then
    echo "pythons: CPython $v in $p does not run (see $log)" >&3
    exit 1
  fi
  rm -rf "$d"
done
exit 0
