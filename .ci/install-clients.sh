#!/usr/bin/env bash
# Installs the client programs the compatibility suite (clients_test.go)
# drives, from Debian's packages, when they are missing. Idempotent: with
# everything present it does nothing, not even apt-get update.
set -euo pipefail

# command -> Debian package
declare -A packages=(
	[curl]=curl
	[node]=nodejs
	[python3]=python3
	[java]=default-jdk-headless
	[javac]=default-jdk-headless
	[cadaver]=cadaver
	[rclone]=rclone
)

missing=()
for cmd in "${!packages[@]}"; do
	if ! command -v "$cmd" >/dev/null 2>&1; then
		missing+=("${packages[$cmd]}")
	fi
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "client programs: all present"
	exit 0
fi
# One package per name, however many commands it provides.
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "client programs: installing ${missing[*]}"

sudo=()
if [ "$(id -u)" -ne 0 ]; then
	sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
