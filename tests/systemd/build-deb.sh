#!/usr/bin/env bash
# tests/systemd/build-deb.sh -- build the Debian package from this checkout and lintian it.
#
#   tests/systemd/build-deb.sh [OUTDIR]      (default build/deb)
#
# The checkout (without .git, .venv and build outputs, uncommitted edits included) is copied to
# OUTDIR/src/lvsd-VERSION and built there with `dpkg-buildpackage -us -uc`, so the .deb, .dsc and
# .changes land in OUTDIR and the checkout itself stays clean. Then `lintian` checks the .changes
# (binary and source package); any error or warning fails (info tags are shown, not failures).
# Build dependencies are installed with apt-get when missing (root or sudo).
# Exit status: 0 built and lintian clean; 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(realpath -m "${1:-build/deb}")
version=$(dpkg-parsechangelog -S Version 2>/dev/null || sed -n '1s/.*(\(.*\)).*/\1/p' debian/changelog)
deps="debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools bash-completion
  python3-aiohttp lintian dpkg-dev build-essential man-db"
missing=$(for p in $deps; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || echo "$p"; done)
if [ -n "$missing" ]; then
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "build-deb: installing" $missing >&2
  $sudo apt-get update -q >/dev/null
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o DPkg::Lock::Timeout=600 $missing >/dev/null
fi
rm -rf "$out"
src=$out/src/lvsd-$version
mkdir -p "$src"
tar -c --exclude-vcs --exclude=./.venv --exclude=./build --exclude=./debian/.debhelper \
  --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache --exclude=.hypothesis \
  --exclude=.ruff_cache --exclude=.mypy_cache --exclude=./tmp . | tar -x -C "$src"
# build in the copy; the results go to its parent, moved up to OUTDIR
# the distribution's python3, not one a PATH (pyenv, a venv) puts first
(cd "$src" && env PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc) >"$out/build.log" 2>&1 || { tail -n 40 "$out/build.log" >&2; exit 1; }
mv "$out"/src/lvsd_"$version"* "$out/"
rm -rf "$out/src"
ls -l "$out"/*.deb
lintian --fail-on error,warning --display-info "$out"/lvsd_"$version"_*.changes
