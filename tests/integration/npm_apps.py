"""Fixture applications under tests/fixtures with their npm packages.

node_modules are installed at test time, once per package.json content, into
a cache outside the repository (DBOSFS_NPM_CACHE, default
/tmp/dbosfs-npm-cache; test_migrate.py's Knex test shares it) and reused by
later runs. A test whose packages cannot be installed (no npm, registry
unreachable) is skipped with the reason, never passed silently."""
import fcntl
import hashlib
import os
import pathlib
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
NPM_CACHE = pathlib.Path(os.environ.get("DBOSFS_NPM_CACHE", "/tmp/dbosfs-npm-cache"))


_registry_problem = []   # memo of registry_problem(): [] until asked, then [reason or None]


def registry_problem():
    """Why npm cannot reach its registry (None when it can). Asked once per
    test session, without retries: an unreachable registry otherwise costs
    minutes of npm's own retrying for every fixture."""
    if not _registry_problem:
        try:
            r = subprocess.run(["npm", "ping", "--fetch-retries=0"], capture_output=True,
                               text=True, timeout=30)
            errors = [ln for ln in (r.stderr + r.stdout).splitlines()
                      if ln.startswith("npm error") and "complete log" not in ln]
            # FetchError's line names the URL and the reason (ECONNREFUSED, ...).
            why = [ln for ln in errors if "reason:" in ln] or errors[:2] or ["npm ping failed"]
            problem = None if r.returncode == 0 else " / ".join(why)[:300]
        except subprocess.TimeoutExpired:
            problem = "npm ping timed out after 30 s"
        _registry_problem.append(problem)
    return _registry_problem[0]


def fixture_modules(fixture, needed_bin):
    """node_modules for tests/fixtures/FIXTURE, from the cache or installed
    now; skips the calling test when npm cannot provide them."""
    pkg = (FIXTURES / fixture / "package.json").read_bytes()
    cache = NPM_CACHE / f"{fixture}-{hashlib.sha256(pkg).hexdigest()[:12]}"
    marker = cache / "node_modules" / ".bin" / needed_bin
    if marker.exists():
        return cache / "node_modules"
    if not shutil.which("npm"):
        pytest.skip(f"npm is not installed: cannot install {fixture}'s packages")
    problem = registry_problem()
    if problem:
        pytest.skip(f"npm registry unreachable, cannot install {fixture}'s packages: {problem}")
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent test runs share the cache
        if not marker.exists():
            (cache / "package.json").write_bytes(pkg)
            try:
                r = subprocess.run(["npm", "install", "--no-audit", "--no-fund",
                                    "--loglevel=error"], cwd=cache, capture_output=True,
                                   text=True, timeout=300)
            except subprocess.TimeoutExpired:
                pytest.skip(f"npm install for {fixture} timed out after 300 s "
                            "(registry unreachable?)")
            if r.returncode != 0 or not marker.exists():
                pytest.skip(f"npm install for {fixture} failed (registry unreachable?): "
                            + (r.stderr or r.stdout)[-500:])
    return cache / "node_modules"


def copy_app(fixture, dest, modules=None):
    """A private copy of a fixture app in DEST (tests may add files to it),
    with node_modules linked from the cache."""
    app = pathlib.Path(dest) / fixture
    shutil.copytree(FIXTURES / fixture, app, ignore=shutil.ignore_patterns("node_modules"))
    if modules is not None:
        (app / "node_modules").symlink_to(modules)
    return app
