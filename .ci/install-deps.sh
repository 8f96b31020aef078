#!/bin/bash
# Installs every Debian package the daemon, its tests and its packaging need.
# Idempotent: a machine that has them all is left alone. Services are never
# started by the package scripts (policy-rc.d): the tests start their own
# dockerd, udevd and NetworkManager, and NetworkManager must never take over
# the host's real interfaces.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PKGS=(
  # runtime libraries, at the versions Debian 12 ships
  python3-pyudev python3-dbus-next python3-docker python3-watchdog
  python3-structlog python3-sdnotify python3-yaml python3-requests python3-segno
  # test runner and tools
  python3-pytest python3-jsonschema python3-venv python3-gi python3-dbus gir1.2-umockdev-1.0 umockdev
  # real components
  docker.io mmdebstrap udev network-manager dbus iproute2 systemd
  dnsmasq-base  # NetworkManager's shared mode (the hotspot) runs it: the captive-portal test needs the real one
  busybox socat curl  # the captive-portal test: udhcpc as the DHCP client, socat to reach the hub, curl as the browser
  avahi-daemon avahi-utils  # publishes conjuring.local; the mDNS test resolves it with avahi-resolve
  chromium  # the real-browser test (Playwright drives Debian's build: it cannot download its own here)
  zbar-tools  # zbarimg: an independent reader of the class sheet's QR codes
  e2fsprogs dosfstools mtools fusefat fuse3 util-linux exfat-fuse exfatprogs
  # packaging
  debhelper dh-python pybuild-plugin-pyproject python3-setuptools lintian
  build-essential fakeroot
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; created_policy=1
  fi
  trap '[ $created_policy = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
