#!/usr/bin/env bash
# Installs the reverse proxies the proxy suite (interop/proxies_test.go) puts in
# front of Caddy, from Debian's packages, when they are missing. The tests
# start each proxy themselves, in the foreground, on a loopback port of
# their own; the services the packages would start on install (nginx and
# Apache on port 80, Varnish on 6081, Squid on 3128) are kept from starting
# with a policy-rc.d, and stopped if they run anyway. Idempotent: with
# everything present it does nothing, not even apt-get update.
set -euo pipefail
source "$(dirname "$0")/apt.sh"

apt_missing nginx=nginx-light apache2=apache2 haproxy=haproxy varnishd=varnish squid=squid
if [ ${#APT_MISSING[@]} -eq 0 ]; then
	echo "proxies: all present"
	exit 0
fi
echo "proxies: installing ${APT_MISSING[*]}"

sudo=()
if [ "$(id -u)" -ne 0 ]; then
	sudo=(sudo)
fi
# Exit status 101 of policy-rc.d tells invoke-rc.d not to start services.
# An existing policy is left alone.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
	"${sudo[@]}" chmod 755 "$policy"
	trap '"${sudo[@]}" rm -f "$policy"' EXIT
fi
apt_install "${APT_MISSING[@]}"

# Where a service manager ignored the policy, stop what it started and
# keep it from starting at boot.
for svc in nginx apache2 haproxy varnish varnishncsa squid; do
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		"${sudo[@]}" systemctl disable --now "$svc" >/dev/null 2>&1 || true
	elif [ -x "/etc/init.d/$svc" ]; then
		"${sudo[@]}" service "$svc" stop >/dev/null 2>&1 || true
	fi
done
