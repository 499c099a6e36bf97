"""Start and stop a throwaway local PostgreSQL cluster (standard library only).

Used by the PostgreSQL sweep test and by ``.ci/postgres.sh``. The cluster lives in
a fresh temporary directory, listens on 127.0.0.1 at a free port with trust
authentication for the ``postgres`` role, and is removed by :func:`stop`. As root
(CI), the server runs as the ``postgres`` system user that Debian's package creates.

``python3 tests/experiments/pg_server.py start`` prints shell ``export`` lines
(``MMIB_TEST_POSTGRES_URL``, ``MMIB_TEST_POSTGRES_DIR``);
``python3 tests/experiments/pg_server.py stop DIR`` stops that cluster.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """No local PostgreSQL server can be started here (the message says why)."""


@dataclass
class Server:
    url: str
    directory: Path
    bindir: Path
    user: str | None


def find_bindir() -> Path | None:
    """The newest PostgreSQL server bin directory (Debian layout first, then PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parent.parent.name.split(".")])
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl and shutil.which("initdb") else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(args: list[str], user: str | None, what: str) -> None:
    try:
        proc = subprocess.run(args, user=user, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        raise PostgresUnavailable(f"{what} failed: {exc}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise PostgresUnavailable(f"{what} failed (exit {proc.returncode}): {' / '.join(tail)}")


def start() -> Server:
    """Initialise and start a cluster; raises :class:`PostgresUnavailable` with the reason otherwise."""
    bindir = find_bindir()
    if bindir is None:
        raise PostgresUnavailable("no PostgreSQL server binaries (initdb/pg_ctl) found; "
                                  "install Debian's postgresql package")
    user = None
    directory = Path(tempfile.mkdtemp(prefix="mmib-pg-"))
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # the server refuses to run as root
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(directory, ignore_errors=True)
            raise PostgresUnavailable("running as root and there is no 'postgres' system user to run the server") from None
        os.chown(directory, pw.pw_uid, pw.pw_gid)
        user = "postgres"
    data = directory / "data"
    port = free_port()
    try:
        _run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
             user, "initdb")
        opts = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        _run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(directory / "server.log"), "-o", opts, "-w", "-t", "60",
              "start"], user, "pg_ctl start")
    except PostgresUnavailable:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return Server(f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres", directory, bindir, user)


def stop(directory: str | Path) -> None:
    """Stop the cluster in ``directory`` (from :func:`start`) and delete it."""
    directory = Path(directory)
    bindir = find_bindir()
    if bindir is not None and (directory / "data").is_dir():
        user = "postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
        subprocess.run([str(bindir / "pg_ctl"), "-D", str(directory / "data"), "-m", "immediate", "-w", "stop"],
                       user=user, capture_output=True, timeout=60)
    shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["start"]:
        try:
            server = start()
        except PostgresUnavailable as exc:
            print(f"echo 'PostgreSQL not started: {str(exc).replace(chr(39), '')}' >&2")
            sys.exit(0)
        print(f"export MMIB_TEST_POSTGRES_URL='{server.url}'")
        print(f"export MMIB_TEST_POSTGRES_DIR='{server.directory}'")
    elif sys.argv[1:2] == ["stop"] and len(sys.argv) == 3:
        stop(sys.argv[2])
    else:
        sys.exit("usage: pg_server.py start | stop DIR")
