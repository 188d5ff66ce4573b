#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: the C unit tests
# (meson test) in a normal, an ASan/UBSan and a ThreadSanitizer build
# (scripts/check-tsan.sh, about 2 minutes), then the integration tests
# (pytest) against the sanitizer build, mounting the real filesystem.
# Results go to build-asan/results/*.xml; the last line sums them up.
# Extra arguments go to pytest (e.g. scripts/test.sh -k migrate).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scripts/deps.sh || exit 1
echo "==> building"
scripts/build.sh build || exit 1
scripts/build.sh build-asan -Db_sanitize=address,undefined -Db_lundef=false || exit 1
results="$root/build-asan/results"
rm -rf "$results"
mkdir -p "$results"

status=0
echo "==> unit tests"
for b in build build-asan; do
	meson test -C "$b" --print-errorlogs -q || status=1
	cp "$b/meson-logs/testlog.junit.xml" "$results/unit-$b.xml" 2>/dev/null || true
done

echo "==> unit tests under ThreadSanitizer (incl. the local smoke test)"
scripts/check-tsan.sh -q || status=1
cp build-tsan/meson-logs/testlog.junit.xml "$results/unit-build-tsan.xml" 2>/dev/null || true

echo "==> integration tests"
export DBOSFS_BIN="$root/build-asan/dbosfs"
# Leaks are reported at exit; the harness fails a test on any report.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=0"
export UBSAN_OPTIONS="print_stacktrace=1"
/usr/bin/python3 -m pytest -p no:cacheprovider -q -ra tests/integration \
	--junitxml="$results/integration.xml" "$@"
rc=$?
# 5: no test collected, which must not pass silently.
[ $rc -eq 0 ] || status=1

/usr/bin/python3 - "$results" <<'PY'
import glob, sys, xml.etree.ElementTree as ET
passed = failed = skipped = 0
for f in glob.glob(sys.argv[1] + "/*.xml"):
    root = ET.parse(f).getroot()
    suites = [root] if root.tag == "testsuite" else root.iter("testsuite")
    for s in suites:
        t = int(s.get("tests", 0)); fl = int(s.get("failures", 0)) + int(s.get("errors", 0))
        sk = int(s.get("skipped", 0))
        passed += t - fl - sk; failed += fl; skipped += sk
print(f"{passed} passed, {failed} failed, {skipped} skipped")
PY
exit $status
