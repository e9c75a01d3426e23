#!/usr/bin/env bash
# The PostgreSQL tests start a throwaway server of their own from Debian's postgresql package
# (initdb and postgres under /usr/lib/postgresql/<version>/bin). This makes sure one is there.
set -euo pipefail
newest_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ] && [ -x "$dir/pg_ctl" ]; then
    echo "$dir"
  fi
}
bin=$(newest_bin)
if [ -z "$bin" ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "The PostgreSQL tests need Debian's postgresql server (initdb, postgres, pg_ctl under" >&2
    echo "/usr/lib/postgresql/<version>/bin), version 14 or newer: install it with your system's package manager." >&2
    exit 1
  fi
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  echo "installing Debian's postgresql for the PostgreSQL tests" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  bin=$(newest_bin)
  if [ -z "$bin" ]; then
    echo "apt-get installed postgresql, but no initdb/postgres/pg_ctl is under /usr/lib/postgresql/<version>/bin" >&2
    exit 1
  fi
fi
major=$(basename "$(dirname "$bin")")
if [ "${major%%.*}" -lt 14 ] 2>/dev/null; then
  echo "PostgreSQL $major is at $bin; the service needs 14 or newer" >&2
  exit 1
fi
"$bin/postgres" --version
