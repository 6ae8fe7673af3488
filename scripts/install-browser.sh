#!/usr/bin/env bash
# Debian's chromium and a CJK font for the web app's browser tests (tests/web drives
# /usr/bin/chromium through Playwright; Playwright's own browser download is never used), and
# Node.js with npm when there is no npm (the web app's build, web/).
# Installs through apt as root or with password-less sudo; otherwise says what to run.
# --required (CI): fail when it cannot install them.
set -euo pipefail
required=${1:-}
have() {
  [ -x /usr/bin/chromium ] && dpkg -s fonts-wqy-microhei >/dev/null 2>&1 && command -v npm >/dev/null
}
if have; then exit 0; fi
give_up() {
  echo "install-browser: $1; the browser tests (tests/web) are skipped without /usr/bin/chromium." >&2
  echo "  run: sudo apt-get install -y --no-install-recommends chromium fonts-wqy-microhei" >&2
  echo "  (and nodejs npm if npm is missing)" >&2
  if [ "$required" = "--required" ]; then exit 1; fi
  exit 0
}
command -v apt-get >/dev/null || give_up "no apt-get here"
if [ "$(id -u)" = 0 ]; then
  as_root=(env)
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  as_root=(sudo -n env)
else
  give_up "not root and no password-less sudo"
fi
"${as_root[@]}" DEBIAN_FRONTEND=noninteractive apt-get update -q
packages=(chromium fonts-wqy-microhei)
command -v npm >/dev/null || packages+=(nodejs npm)
"${as_root[@]}" DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  "${packages[@]}"
have || give_up "apt-get did not install them"
