#!/bin/bash
# Installs what sparkctl's sandbox (a throwaway real systemd with its system bus, Quadlet and
# Podman 5, used by the integration tests, the benchmarks and `sparkctl demo`) needs on a Debian 12
# machine without systemd as PID 1. Run as root. Idempotent: a second run with the same pins is a
# no-op that takes milliseconds.
#
#   1. Debian bookworm packages (systemd, dbus, polkitd, Podman's helpers), at the pinned versions
#      below when they have to be installed; packages already present are left as they are.
#   2. Podman 5.4 + crun 1.21 + Quadlet from Debian trixie, unpacked into $PREFIX/podman5 with a
#      private glibc (patchelf'ed interpreter and rpath) — nothing is installed system-wide and no
#      system library is replaced. bookworm's Podman 4.3 has no Quadlet and its crun cannot run
#      without CAP_SYS_RESOURCE.
#
# Knobs: SPARKCTL_SANDBOX_PREFIX (default /opt/sparkctl-sandbox). If Debian has moved a pinned
# version out of its archive, the current version is taken instead, with a warning; the versions
# really unpacked are recorded in $PREFIX/versions.txt.
set -euo pipefail

PREFIX=${SPARKCTL_SANDBOX_PREFIX:-/opt/sparkctl-sandbox}
P5=$PREFIX/podman5
APTX=$PREFIX/apt

BOOKWORM_PINS=(
  systemd=252.39-1~deb12u2
  dbus=1.14.10-1~deb12u1
  polkitd=122-3
  util-linux=2.38.1-5+deb12u3
  conmon=2.1.6+ds1-1
  golang-github-containers-common=0.50.1+ds1-4
  netavark=1.4.0-3
  aardvark-dns=1.4.0-3
  catatonit=0.1.7-1+b2
  iptables=1.8.9-2
  libyajl2=2.1.0-3+deb12u2
  busybox-static=1:1.35.0-4+deb12u1+b1
  patchelf=0.14.3-1+b1
)
TRIXIE_PINS=(
  podman=5.4.2+ds1-2+b2
  crun=1.21-1
  libc6=2.41-12+deb13u5
  libgpgme11t64=1.24.2-3
  libassuan9=3.0.2-2
  libgpg-error0=1.51-4
  libsubid5=1:4.17.4-2
)
STAMP_CONTENT="v1 ${BOOKWORM_PINS[*]} ${TRIXIE_PINS[*]}"
STAMP=$PREFIX/.installed

log() { printf '[sparkctl-sandbox] %s\n' "$*" >&2; }
die() { printf '[sparkctl-sandbox] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs Debian packages and unpacks Podman into $PREFIX)"
[ -r /etc/debian_version ] || die "needs a Debian 12 (bookworm) machine"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_CONTENT" ] && [ -x "$P5/usr/bin/podman" ]; then
  exit 0
fi
t0=$(date +%s.%N)
mkdir -p "$PREFIX"

# ---- 1. bookworm packages -------------------------------------------------------------------------
have_version() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
missing=()
for pin in "${BOOKWORM_PINS[@]}"; do
  have_version "${pin%%=*}" || missing+=("$pin")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt_install() { apt-get install -y -q --no-install-recommends "$@" >&2; }
  if ! apt_install "${missing[@]}"; then
    apt-get update -q >&2 || true
    if ! apt_install "${missing[@]}"; then
      log "warning: a pinned version is no longer in the archive; taking the current ones"
      apt_install "${missing[@]%%=*}"
    fi
  fi
fi

# ---- 2. Podman 5 from trixie, unpacked privately -------------------------------------------------
aptx() {
  apt-get -o Dir::Etc::SourceList="$APTX/sources.list" -o Dir::Etc::SourceParts=/dev/null \
          -o Dir::State::Lists="$APTX/lists" -o Dir::Cache="$APTX/cache" -o Debug::NoLocking=1 \
          -o APT::Sandbox::User=root -q "$@"
}
rm -rf "$APTX"; mkdir -p "$APTX/lists/partial" "$APTX/cache/archives/partial" "$APTX/debs"
cat > "$APTX/sources.list" <<'EOF'
deb http://deb.debian.org/debian trixie main
deb http://deb.debian.org/debian trixie-updates main
deb http://deb.debian.org/debian-security trixie-security main
EOF
aptx update >&2
for pin in "${TRIXIE_PINS[@]}"; do
  if ! (cd "$APTX/debs" && aptx download "$pin" >&2); then
    log "warning: $pin is no longer in the archive; taking the current ${pin%%=*}"
    (cd "$APTX/debs" && aptx download "${pin%%=*}" >&2)
  fi
done
rm -rf "$P5.new"; mkdir -p "$P5.new"
: > "$PREFIX/versions.txt.new"
for deb in "$APTX"/debs/*.deb; do
  dpkg -x "$deb" "$P5.new"
  dpkg-deb -W --showformat='${Package} ${Version} (trixie, unpacked)\n' "$deb" >> "$PREFIX/versions.txt.new"
done
L=$P5/usr/lib/x86_64-linux-gnu   # final location: the rpath must name it, not the staging dir
for bin in usr/bin/podman usr/bin/crun; do
  patchelf --set-interpreter "$L/ld-linux-x86-64.so.2" --force-rpath --set-rpath "$L" "$P5.new/$bin"
done
rm -rf "$P5"; mv "$P5.new" "$P5"
mv "$PREFIX/versions.txt.new" "$PREFIX/versions.txt"
for bin in "$P5/usr/bin/podman" "$P5/usr/bin/crun" "$P5/usr/libexec/podman/quadlet" /usr/bin/conmon /usr/lib/podman/netavark; do
  if ldd "$bin" 2>&1 | grep -q 'not found'; then die "$bin: missing libraries: $(ldd "$bin" | grep 'not found')"; fi
done
"$P5/usr/bin/podman" --version >&2
"$P5/usr/libexec/podman/quadlet" -version >&2
rm -rf "$APTX"
dpkg-query -W -f='${Package} ${Version}\n' "${BOOKWORM_PINS[@]%%=*}" >> "$PREFIX/versions.txt"
printf '%s' "$STAMP_CONTENT" > "$STAMP"
log "installed in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s; $(du -sh "$PREFIX" | cut -f1) in $PREFIX"
