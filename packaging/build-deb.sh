#!/bin/bash
# Builds dist/conjuringd_<version>_all.deb from a copy of the source tree, so
# the work tree stays clean. Usage: packaging/build-deb.sh [--lintian] [OUTDIR]
#   --lintian   also run `lintian --fail-on error,warning` on the result
set -euo pipefail
# pybuild must find Debian's python3, not another one earlier on PATH.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C.UTF-8

run_lintian=0
if [ "${1:-}" = "--lintian" ]; then run_lintian=1; shift; fi
top=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$top/dist}" && cd "${1:-$top/dist}" && pwd)

version=$(dpkg-parsechangelog -l "$top/packaging/debian/changelog" -S Version)
py_version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$top/pyproject.toml" | head -1)
if [ "$version" != "$py_version" ]; then
    echo "build-deb: packaging/debian/changelog says $version, pyproject.toml says $py_version" >&2
    exit 1
fi
for needed in pyproject.toml README.md conjuringd systemd/conjuringd.service udev custom/conjuring.toml \
              packaging/man/conjuringd.8 packaging/man/conjuringctl.8; do
    if [ ! -e "$top/$needed" ]; then
        echo "build-deb: $needed is missing from the source tree" >&2
        exit 1
    fi
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
src="$tmp/conjuringd-$version"
mkdir -p "$src/packaging"
# Only what the package is made of; never caches, venvs or test scratch.
tar -C "$top" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' \
    -cf - pyproject.toml README.md conjuringd systemd udev custom packaging/man | tar -C "$src" -xf -
cp -r "$top/packaging/debian" "$src/debian"

start=$(date +%s)
(cd "$src" && dpkg-buildpackage -us -uc -b) > "$tmp/build.log" 2>&1 || {
    tail -n 60 "$tmp/build.log" >&2
    echo "build-deb: dpkg-buildpackage failed" >&2
    exit 1
}
deb="conjuringd_${version}_all.deb"
cp "$tmp/$deb" "$out/$deb"
echo "built $out/$deb in $(( $(date +%s) - start ))s"

if [ "$run_lintian" = 1 ]; then
    lintian --fail-on error,warning --tag-display-limit 0 "$out/$deb"
    echo "lintian: no errors, no warnings"
fi
