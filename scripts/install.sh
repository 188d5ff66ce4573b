#!/usr/bin/env bash
# Installs dbosfs on a Debian 12 machine: the packages it needs (deps.sh), a
# release build, then `meson install`: the binary, the man page and the
# systemd units (system and user templates) under PREFIX (default /usr/local).
# Usage: sudo scripts/install.sh        or   PREFIX=/usr sudo scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${PREFIX:-/usr/local}
dir=build-release
scripts/deps.sh
if [ -f "$dir/build.ninja" ]; then
	meson configure "$dir" --prefix="$prefix" >/dev/null
else
	meson setup "$dir" --prefix="$prefix" --buildtype=release >/dev/null
fi
ninja -C "$dir" >/dev/null
meson install -C "$dir" --no-rebuild
# Let a running systemd see the new units.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
"$prefix/bin/dbosfs" --version
