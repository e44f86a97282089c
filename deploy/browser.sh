#!/usr/bin/env bash
# The browser the duty-desk tests drive: Debian's Chromium and a CJK font (so Chinese pages
# render readably in screenshots). Idempotent; skips what is already there.
#
# The Python playwright package never downloads a browser of its own here: the tests launch
# /usr/bin/chromium with executable_path (see tests/browser/conftest.py).
#
# Must run as root (apt-get).
set -Eeuo pipefail

need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
# Any CJK font will do; WenQuanYi Micro Hei is small (about 5 MB installed).
fc-list :lang=zh 2>/dev/null | grep . >/dev/null || need+=(fonts-wqy-microhei) # not -q: see stack.sh (pipefail)

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "deploy/browser.sh: need root to install ${need[*]}" >&2
    exit 1
fi

echo "deploy/browser.sh: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
/usr/bin/chromium --version 2>/dev/null
