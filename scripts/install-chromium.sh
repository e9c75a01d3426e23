#!/usr/bin/env bash
# The page tests drive a real Chromium through playwright-core, which downloads no browser
# of its own. This makes sure one is there: Debian's package, or ATM_TEST_CHROMIUM if set.
set -euo pipefail
if [ -n "${ATM_TEST_CHROMIUM:-}" ]; then
  [ -x "$ATM_TEST_CHROMIUM" ] && exit 0
  echo "ATM_TEST_CHROMIUM=$ATM_TEST_CHROMIUM is not an executable file" >&2
  exit 1
fi
if [ -x /usr/bin/chromium ]; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "The page tests need Chromium at /usr/bin/chromium (Debian/Ubuntu: apt-get install chromium)," >&2
  echo "or ATM_TEST_CHROMIUM set to a Chromium or Chrome binary." >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
echo "installing Debian's chromium for the page tests" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
/usr/bin/chromium --version
