# Sourced by the .ci/install-*.sh scripts (not run on its own).

# apt_missing CMD=PACKAGE...: sets APT_MISSING to the packages, each once,
# of the commands found neither on PATH nor in the sbin folders, where
# Debian puts daemons.
apt_missing() {
	local pair
	APT_MISSING=()
	for pair in "$@"; do
		if ! PATH="$PATH:/usr/sbin:/sbin" command -v "${pair%%=*}" >/dev/null 2>&1; then
			APT_MISSING+=("${pair#*=}")
		fi
	done
	if [ ${#APT_MISSING[@]} -gt 0 ]; then
		mapfile -t APT_MISSING < <(printf '%s\n' "${APT_MISSING[@]}" | sort -u)
	fi
}

# apt_install PACKAGE...: installs them from Debian's packages, as root or
# through sudo, after an apt-get update.
apt_install() {
	local sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		sudo=(sudo)
	fi
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -q
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "$@" </dev/null
}
