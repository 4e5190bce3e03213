#!/usr/bin/env bash
# Builds Caddy with this module the way the README tells a user to, and
# checks the binary. A user's `xcaddy build --with <module>` fetches the
# module from a module proxy as a zip; so does this script, from a local
# file-based proxy holding the HEAD commit (interop/modzip). Uncommitted
# changes are therefore not in the build.
#
#   bash interop/xcaddy.sh        # about 2.5 minutes, most of it compiling Caddy
#
# Then, with the binary xcaddy built:
#   - `caddy list-modules` lists http.handlers.processing;
#   - `caddy adapt`, `caddy validate` and `caddy fmt --diff` accept
#     Caddyfile.example as it is, without a warning or a change;
#   - a Caddy with `processing` and `reverse_proxy` to a slow upstream gives
#     curl its 102s and then the upstream's 200 and body.
# CADDY_VERSION (xcaddy's own variable) picks the Caddy version; by default
# xcaddy takes the latest, as it does for a user.
set -euo pipefail
cd "$(dirname "$0")/.."

xcaddy_version=v0.4.5
work=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

fail() {
	echo "xcaddy check FAILED: $*" >&2
	exit 1
}

if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
	echo "note: uncommitted changes are not in this build; it builds HEAD"
fi

module=$(go list -m)
(cd interop && go build -o "$work/modzip" ./modzip)
version=$("$work/modzip" -proxy "$work/proxy")
echo "published $module@$version to file://$work/proxy"

# The local proxy first, then the usual one for Caddy and everything else.
# This version exists nowhere but here, so the checksum database must not
# be asked about it; everything else is still checked.
export GOPROXY="file://$work/proxy,$(go env GOPROXY)"
export GONOSUMDB="$module${GONOSUMDB:+,$GONOSUMDB}"

GOBIN="$work/bin" go install "github.com/caddyserver/xcaddy/cmd/xcaddy@$xcaddy_version"
(cd "$work" && "$work/bin/xcaddy" build --with "$module@$version" --output "$work/caddy")
caddy=$work/caddy
echo "built: $("$caddy" version)"

# 1. The module is in the binary, at the version just published.
"$caddy" list-modules --versions >"$work/modules"
got=$(awk '$1 == "http.handlers.processing" { print $2 }' "$work/modules")
[ "$got" = "$version" ] ||
	fail "caddy list-modules lists http.handlers.processing at '${got:-nothing}', want $version"
echo "ok: caddy list-modules lists http.handlers.processing $got"

# 2. The example Caddyfile: adapts and validates without a warning (a
# warning such as "input is not formatted" is a change a user would be
# asked to make), and caddy fmt has nothing to change in it.
"$caddy" adapt --config Caddyfile.example >"$work/adapted.json" 2>"$work/adapt.log" ||
	fail "caddy adapt: $(cat "$work/adapt.log")"
if grep -q '"level":"warn"\|WARN' "$work/adapt.log"; then
	fail "caddy adapt warned: $(cat "$work/adapt.log")"
fi
grep -q '"handler":"processing"' "$work/adapted.json" ||
	fail "caddy adapt: no processing handler in $(cat "$work/adapted.json")"
echo "ok: caddy adapt"
"$caddy" validate --config Caddyfile.example >"$work/validate.log" 2>&1 ||
	fail "caddy validate: $(cat "$work/validate.log")"
if grep -q '"level":"warn"\|WARN' "$work/validate.log"; then
	fail "caddy validate warned: $(cat "$work/validate.log")"
fi
echo "ok: caddy validate"
# fmt --diff prints every line: "  " before a line it keeps, "- " or "+ "
# before a change; and it exits 1 when the input is not formatted.
"$caddy" fmt --diff Caddyfile.example >"$work/fmt.diff" 2>&1 ||
	fail "caddy fmt --diff: $(cat "$work/fmt.diff")"
if grep -q '^[-+] ' "$work/fmt.diff"; then
	fail "caddy fmt would change Caddyfile.example: $(grep '^[-+] ' "$work/fmt.diff")"
fi
echo "ok: caddy fmt --diff: no change"

# 3. 102s through the real thing: curl -> Caddy (processing, reverse_proxy)
# -> an upstream that takes 2 s.
(cd interop && go build -o "$work/slowupstream" ./slowupstream)
"$work/slowupstream" -wait 2s -addr-file "$work/upstream.addr" &
pids+=($!)
for _ in $(seq 100); do
	[ -s "$work/upstream.addr" ] && break
	sleep 0.1
done
[ -s "$work/upstream.addr" ] || fail "the slow upstream did not start"
upstream=$(cat "$work/upstream.addr")

# A free port: Caddy needs its address in the Caddyfile before it starts.
# One that nothing accepts on a moment ago will do.
for _ in $(seq 50); do
	port=$((20000 + RANDOM % 20000))
	(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
done
cat >"$work/Caddyfile" <<EOF
{
	admin off
	auto_https off
}

http://127.0.0.1:$port {
	processing 300ms
	reverse_proxy $upstream
}
EOF
"$caddy" run --config "$work/Caddyfile" >"$work/caddy.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
	(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
	sleep 0.1
done

curl -sv --max-time 20 "http://127.0.0.1:$port/report" >"$work/body" 2>"$work/curl.log" ||
	fail "curl: $(cat "$work/curl.log") $(cat "$work/caddy.log")"
echo "curl -v printed (response lines):"
grep '^< HTTP/' "$work/curl.log" | sed 's/^/    /'
interims=$(grep -c '^< HTTP/1.1 102 Processing' "$work/curl.log" || true)
statuses=$(grep '^< HTTP/' "$work/curl.log" | tr -d '\r')
last=$(tail -n 1 <<<"$statuses")
[ "$interims" -ge 3 ] || fail "expected at least 3 interim 102s in 2 s at a 300ms interval, got $interims"
[ "$last" = "< HTTP/1.1 200 OK" ] || fail "expected the final status 200 after the 102s, got: $last"
[ "$(grep -vc '102 Processing' <<<"$statuses")" -eq 1 ] || fail "expected one final status, got: $statuses"
[ "$(cat "$work/body")" = "slow upstream done after 2s" ] || fail "unexpected body: $(cat "$work/body")"
echo "ok: curl saw $interims × 102 Processing, then 200 OK and the upstream's body"
echo "xcaddy check passed"
