#!/usr/bin/env bash
# Installs what the async-mode client tests (interop/async_clients_test.go) need
# beyond .ci/install-clients.sh: Python's requests module, from Debian's
# python3-requests, for the README's polling example. Idempotent: when
# python3 can import requests it does nothing. PyPI is not used.
set -euo pipefail

if command -v python3 >/dev/null 2>&1 && python3 -c 'import requests' 2>/dev/null; then
	echo "python3 requests: present"
	exit 0
fi
echo "python3 requests: installing python3-requests"
sudo=()
if [ "$(id -u)" -ne 0 ]; then
	sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends python3 python3-requests </dev/null
# Debian's package serves /usr/bin/python3; a python3 earlier in PATH (pyenv)
# may still lack it.
if ! python3 -c 'import requests' 2>/dev/null; then
	echo "python3 on PATH ($(command -v python3)) still cannot import requests; /usr/bin/python3 can" >&2
	exit 1
fi
