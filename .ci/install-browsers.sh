#!/usr/bin/env bash
# Installs what the browser suite (interop/browsers_test.go) drives: Chromium and
# Firefox ESR from Debian's packages, and the automation library
# (puppeteer-core, pinned by interop/testdata/browsers/package-lock.json) from npm
# into interop/testdata/browsers/node_modules. puppeteer-core never downloads a
# browser: the tests point it at Debian's binaries. Idempotent: with
# everything present it does nothing, not even apt-get update.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/apt.sh

apt_missing chromium=chromium firefox-esr=firefox-esr node=nodejs npm=npm
if [ ${#APT_MISSING[@]} -eq 0 ]; then
	echo "browsers: all present"
else
	echo "browsers: installing ${APT_MISSING[*]}"
	apt_install "${APT_MISSING[@]}"
fi

# npm ci again only when the lock file changed since the last install.
lib=interop/testdata/browsers
stamp="$lib/node_modules/.installed-lock.sha256"
want=$(sha256sum "$lib/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
	echo "browsers: npm ci in $lib"
	(cd "$lib" && npm ci --no-audit --no-fund --ignore-scripts)
	echo "$want" >"$stamp"
else
	echo "browsers: $lib/node_modules up to date"
fi
