#!/usr/bin/env bash
# The console's browser tests drive Debian's Chromium through Playwright (tests/browser).
# Install it where it is missing and this user can (root with apt-get); otherwise say so: the
# tests are then skipped with that reason, except in CI (CI=true), where they fail instead.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Chromium for the browser tests (apt-get, once)..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
    command -v chromium >/dev/null
    exit 0
fi
echo "No chromium on PATH, and it cannot be installed here (needs root and apt-get):" \
    "the browser tests will be skipped. Install Debian's chromium package to run them."
