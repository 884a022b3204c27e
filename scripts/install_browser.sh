#!/usr/bin/env bash
# Install Debian's chromium + chromium-driver for the browser test (tests/service/test_service_browser.py).
# Idempotent and quick when already installed; exits 0 with a message when apt cannot be used
# (not Debian/Ubuntu, not root and no passwordless sudo, no network): the test then skips and says why.
set -u

if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
  echo "install_browser: chromium already installed ($(chromium --version 2>/dev/null || echo /usr/bin/chromium))"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_browser: no apt-get here; install chromium yourself or the browser test will be skipped"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "install_browser: not root and no passwordless sudo; run 'apt-get install chromium chromium-driver' as root, or the browser test will be skipped"
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
install() { $SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver >/tmp/lightfer-install-browser.log 2>&1; }
if ! install; then
  $SUDO apt-get update -q >>/tmp/lightfer-install-browser.log 2>&1 || true
  if ! install; then
    echo "install_browser: apt-get could not install chromium (see /tmp/lightfer-install-browser.log); the browser test will be skipped"
    exit 0
  fi
fi
echo "install_browser: installed $(chromium --version 2>/dev/null || echo chromium)"
