#!/usr/bin/env bash
# Put a Consul binary into metalctl's admin artifact cache ($METALCTL_HOME/artifacts/consul/VERSION/).
# Consul is not packaged for Debian 12 nor on PyPI; Debian 11 (bullseye) ships a real Consul 1.8.7
# in the same archive. We download that .deb with a private apt configuration (the host's own
# sources are not touched), extract usr/bin/consul and record its SHA-256.
set -euo pipefail

home="${METALCTL_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/metalctl}"
version="${CONSUL_VERSION:-1.8.7}"
dest="$home/artifacts/consul/$version"

if [[ -x "$dest/consul" && -s "$dest/consul.sha256" ]]; then
  echo "consul $version already cached in $dest"
  exit 0
fi

mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/etc"
echo "deb $mirror bullseye main" > "$work/etc/sources.list"
apt_opts=(
  -o "Dir::Etc::SourceList=$work/etc/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache=$work/cache"
  -o "APT::Get::List-Cleanup=0"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root"
)
echo "fetching consul from Debian bullseye ($mirror) ..."
apt-get "${apt_opts[@]}" -qq update
(cd "$work" && apt-get "${apt_opts[@]}" -qq download consul)
deb="$(ls "$work"/consul_*.deb)"
got="$(dpkg-deb -f "$deb" Version)"
case "$got" in
  "$version"*) ;;
  *) echo "error: bullseye ships consul $got, expected $version; set CONSUL_VERSION=${got%%+*}" >&2; exit 1 ;;
esac
dpkg-deb -x "$deb" "$work/x"
mkdir -p "$dest"
install -m 0755 "$work/x/usr/bin/consul" "$dest/consul"
(cd "$dest" && sha256sum consul | cut -d' ' -f1 > consul.sha256)
"$dest/consul" version >"$work/version" && head -n1 "$work/version"  # no pipe: SIGPIPE + pipefail
echo "cached in $dest (sha256 $(cat "$dest/consul.sha256"))"
