#!/usr/bin/env bash
# Installs what is missing, builds, and mounts dbosfs with the local
# provider (real PostgreSQL servers on this machine) in the background.
# Usage: scripts/run.sh [MOUNTPOINT] [-o OPTIONS]     (default: ./mnt)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
mnt=${1:-mnt}
shift || true

"$repo/scripts/deps.sh"
echo "==> building"
"$repo/scripts/build.sh" build

# A daemon that died leaves "Transport endpoint is not connected" behind.
if ! stat "$mnt" >/dev/null 2>&1 && [ -n "$(grep " $(realpath -m "$mnt") " /proc/mounts)" ]; then
	echo "==> clearing a dead mount at $mnt"
	fusermount3 -u -z "$mnt"
fi
mkdir -p "$mnt"
mnt=$(cd "$mnt" && pwd)
if mountpoint -q "$mnt"; then
	echo "==> $mnt is already mounted; unmount it first: fusermount3 -u $mnt" >&2
	exit 1
fi
echo "==> mounting $mnt"
"$repo/build/dbosfs" "$@" "$mnt"

cat <<MSG

dbosfs is mounted at $mnt (local provider: $(cat "$mnt/.dbosfs/provider")).
Try:
  cd $mnt
  mkdir mydb                              # provisions a PostgreSQL instance
  cat mydb/status                         # available
  cat mydb/info
  PGPASSFILE=mydb/pgpass psql "\$(cat mydb/url)" -c 'select version()'
  echo mydb > mydb/confirm && rmdir mydb  # destroys it
  cat .dbosfs/log                         # what happened
Unmount with:  fusermount3 -u $mnt        (stops every server it started)
MSG
