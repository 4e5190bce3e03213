#!/usr/bin/env bash
# Installs the client programs the compatibility suite (interop/clients_test.go)
# drives, from Debian's packages, when they are missing. Idempotent: with
# everything present it does nothing, not even apt-get update.
set -euo pipefail
source "$(dirname "$0")/apt.sh"

apt_missing curl=curl node=nodejs python3=python3 java=default-jdk-headless \
	javac=default-jdk-headless cadaver=cadaver rclone=rclone
if [ ${#APT_MISSING[@]} -eq 0 ]; then
	echo "client programs: all present"
	exit 0
fi
echo "client programs: installing ${APT_MISSING[*]}"
apt_install "${APT_MISSING[@]}"
