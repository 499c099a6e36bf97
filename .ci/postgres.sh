# Sourced by .ci/run: install Debian's PostgreSQL server if missing, start a throwaway local
# cluster (127.0.0.1, free port, trust auth) and export MMIB_TEST_POSTGRES_URL for the
# distributed-sweep test (tests/experiments/test_sweep_postgres.py). Best effort: if the
# server cannot be installed or started, the test tries once more itself and otherwise
# skips, saying why.
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && ! command -v pg_ctl >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "installing postgresql (Debian package) for the sweep test"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null 2>&1 \
            || echo "warning: could not install postgresql; the PostgreSQL sweep test will skip" >&2
    fi
fi
eval "$(python3 tests/experiments/pg_server.py start)"
if [ -n "${MMIB_TEST_POSTGRES_DIR:-}" ]; then
    echo "PostgreSQL test server: ${MMIB_TEST_POSTGRES_URL}"
    trap 'python3 tests/experiments/pg_server.py stop "$MMIB_TEST_POSTGRES_DIR"' EXIT
fi
