#!/usr/bin/env bash
# Installs what the browser suite (browsers_test.go) drives: Chromium and
# Firefox ESR from Debian's packages, and the automation library
# (puppeteer-core, pinned by testdata/browsers/package-lock.json) from npm
# into testdata/browsers/node_modules. puppeteer-core never downloads a
# browser: the tests point it at Debian's binaries. Idempotent: with
# everything present it does nothing, not even apt-get update.
set -euo pipefail
cd "$(dirname "$0")/.."

# program -> Debian package
declare -A packages=(
	[chromium]=chromium
	[firefox-esr]=firefox-esr
	[node]=nodejs
	[npm]=npm
)

missing=()
for cmd in "${!packages[@]}"; do
	if ! command -v "$cmd" >/dev/null 2>&1; then
		missing+=("${packages[$cmd]}")
	fi
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "browsers: all present"
else
	mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
	echo "browsers: installing ${missing[*]}"
	sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		sudo=(sudo)
	fi
	export DEBIAN_FRONTEND=noninteractive
	"${sudo[@]}" apt-get update -q
	"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
fi

# npm ci again only when the lock file changed since the last install.
lib=testdata/browsers
stamp="$lib/node_modules/.installed-lock.sha256"
want=$(sha256sum "$lib/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
	echo "browsers: npm ci in $lib"
	(cd "$lib" && npm ci --no-audit --no-fund --ignore-scripts)
	echo "$want" >"$stamp"
else
	echo "browsers: $lib/node_modules up to date"
fi
