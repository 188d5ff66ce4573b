#!/usr/bin/env bash
# Installs what dbosfs needs to build, run and test, from Debian's packages.
# Only missing packages are installed; `apt-get update` runs at most once.
set -euo pipefail

need=()
want() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" || need+=("$1"); }

for p in gcc pkg-config meson ninja-build libfuse3-dev fuse3 libcurl4-openssl-dev \
         libjansson-dev libyaml-dev libpq-dev libssl-dev postgresql-client-15 openssl ca-certificates \
         python3-pytest procps psmisc; do
	want "$p"
done
# Alembic (its command and library) and psycopg2, for the migration
# compatibility suite (tests/integration/test_migrate_compat.py).
for p in alembic python3-alembic python3-psycopg2; do
	want "$p"
done
# mkfs.xfs, for the reflink branch benchmark on a loop-mounted xfs
# (scripts/bench.sh branch).
want xfsprogs
# PostgreSQL server binaries: any installed major version will do.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
	want postgresql-15
fi
# Node.js and npm, for the migration (Knex) and official-CLI tests.
command -v npm >/dev/null 2>&1 || { want nodejs; want npm; }
if [ "${1:-}" = "--dev" ]; then
	want valgrind
	want clang-format
fi

if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "dbosfs: missing packages: ${need[*]}" >&2
		echo "dbosfs: run as root, or: sudo apt-get install ${need[*]}" >&2
		exit 1
	fi
	echo "==> installing: ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# policy-rc.d keeps the postgresql package from starting its own cluster.
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# /dev/fuse must exist for mounting.
[ -e /dev/fuse ] || { echo "dbosfs: /dev/fuse is missing (load the fuse module)" >&2; exit 1; }
