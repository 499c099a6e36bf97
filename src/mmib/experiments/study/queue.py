"""A study's work queue and result store: one table of runs in any SQLAlchemy database.

Every run of a study is a row keyed by the hash of its full configuration
(``(study, key)``), holding its state (``pending``, ``running``, ``done``,
``failed``), who holds it and when that worker last sent a heartbeat, and, once
finished, its ``results.json``, its ``metrics.jsonl`` rows and the post-run
analyses (probes, t-SNE points, ...). Machines that point at one database (the
sweep's ``--storage``: SQLite by default, PostgreSQL to share) share one queue:

* a worker claims the pending runs of one group (runs that differ only in their
  training seed, so that the engine can train them together) with a single
  ``UPDATE ... WHERE state = 'pending'`` carrying a fresh claim token: the
  database lets only one worker win each row;
* while it trains, a thread refreshes the heartbeat of its claimed rows; a
  running row whose heartbeat is older than the grace period is claimable again
  (a machine that vanished), and one held by a dead process of this host is put
  back at once (a run killed with SIGKILL resumes from its checkpoint);
* a value table caches dataset-level measures (oracle scores, MINE bounds).
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from mmib.errors import ConfigError
from mmib.experiments._util import require

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
HEARTBEAT_S = 60.0
GRACE_S = 180.0


@dataclass
class RunRow:
    """One stored run (what the report reads)."""

    key: str
    group: str
    state: str
    path: str
    host: str | None
    worker: str | None
    attempts: int
    error: str | None
    results: dict[str, Any] | None
    history: list[dict[str, Any]] | None
    analyses: dict[str, Any]


def _json(value: Any) -> str:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(value))


class RunStore:
    """The runs table of one study in the database at ``url``."""

    def __init__(self, url: str, study: str, *, heartbeat_s: float = HEARTBEAT_S, grace_s: float = GRACE_S) -> None:
        sa = require("sqlalchemy")
        from mmib.experiments.sweep import redact

        self.url, self.study = url, study
        self.heartbeat_s, self.grace_s = heartbeat_s, grace_s
        kwargs: dict[str, Any] = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
        try:
            self.engine = sa.create_engine(url, **kwargs)
        except ImportError as exc:
            raise ConfigError(f"--storage {redact(url)}: missing database driver ({exc}); "
                              "for PostgreSQL pip install psycopg2-binary") from None
        except Exception as exc:  # noqa: BLE001 - malformed URLs and the like
            raise ConfigError(f"--storage {redact(url)}: cannot open ({_first_line(exc)})") from None
        meta = sa.MetaData()
        self.runs = sa.Table(
            "mmib_study_runs", meta,
            sa.Column("study", sa.String(200), primary_key=True),
            sa.Column("key", sa.String(64), primary_key=True),
            sa.Column("grp", sa.String(64), index=True),
            sa.Column("position", sa.Integer),
            sa.Column("config", sa.Text),
            sa.Column("path", sa.Text),
            sa.Column("state", sa.String(16), index=True),
            sa.Column("worker", sa.String(300)),
            sa.Column("host", sa.String(300)),
            sa.Column("token", sa.String(40)),
            sa.Column("heartbeat", sa.Float),
            sa.Column("attempts", sa.Integer),
            sa.Column("error", sa.Text),
            sa.Column("results", sa.Text),
            sa.Column("history", sa.Text),
            sa.Column("analyses", sa.Text),
            sa.Column("updated", sa.Float),
        )
        self.values = sa.Table(
            "mmib_study_values", meta,
            sa.Column("key", sa.String(200), primary_key=True),
            sa.Column("value", sa.Text),
        )
        try:
            meta.create_all(self.engine)
        except Exception as exc:  # noqa: BLE001 - unreachable servers, permissions
            raise ConfigError(f"--storage {redact(url)}: cannot open ({_first_line(exc)})") from None
        self._sa = sa

    # ------------------------------------------------------------------ registering
    def register(self, entries: Sequence[tuple[str, str, int, str, str]]) -> int:
        """Add runs ``(key, group, position, config_yaml, path)`` that are not stored yet; returns how many."""
        sa = self._sa
        with self.engine.begin() as conn:
            have = {r[0] for r in conn.execute(sa.select(self.runs.c.key).where(self.runs.c.study == self.study))}
        new = [e for e in entries if e[0] not in have]
        added = 0
        for key, group, position, config, path in new:
            try:
                with self.engine.begin() as conn:
                    conn.execute(self.runs.insert().values(
                        study=self.study, key=key, grp=group, position=position, config=config, path=path,
                        state=PENDING, attempts=0, analyses="{}", updated=time.time()))
                added += 1
            except sa.exc.IntegrityError:  # another machine registered it first
                pass
        return added

    def recover(self, worker_alive: Any, host: str, retry_failed: bool = False) -> list[str]:
        """Put back the runs a dead process of this host held (and, if asked, the failed ones)."""
        sa = self._sa
        c = self.runs.c
        back = []
        with self.engine.begin() as conn:
            rows = conn.execute(sa.select(c.key, c.worker).where(c.study == self.study, c.state == RUNNING)).all()
            for key, worker in rows:
                if worker and worker.split(":", 1)[0] == host and not worker_alive(worker):
                    back.append(key)
            if back:
                conn.execute(self.runs.update().where(c.study == self.study, c.key.in_(back), c.state == RUNNING)
                             .values(state=PENDING, token=None, updated=time.time()))
            if retry_failed:
                conn.execute(self.runs.update().where(c.study == self.study, c.state == FAILED)
                             .values(state=PENDING, token=None, error=None, updated=time.time()))
        return back

    # ------------------------------------------------------------------ claiming
    def claim(self, keys: Iterable[str], want: int, worker: str, host: str) -> list[str]:
        """Claim pending (or abandoned) runs among ``keys``, whole groups at a time, at least ``want`` if there are."""
        sa = self._sa
        c = self.runs.c
        keys = set(keys)
        now = time.time()
        stale = now - self.grace_s
        claimable = sa.or_(c.state == PENDING, sa.and_(c.state == RUNNING, c.heartbeat < stale))
        with self.engine.begin() as conn:
            rows = conn.execute(sa.select(c.key, c.grp, c.position).where(c.study == self.study, claimable)
                                .order_by(c.position)).all()
        groups: dict[str, list[str]] = {}
        for key, grp, _ in rows:
            if key in keys:
                groups.setdefault(grp, []).append(key)
        claimed: list[str] = []
        for grp, members in groups.items():
            if len(claimed) >= want:
                break
            token = uuid.uuid4().hex
            with self.engine.begin() as conn:
                conn.execute(self.runs.update()
                             .where(c.study == self.study, c.grp == grp, c.key.in_(members), claimable)
                             .values(state=RUNNING, worker=worker, host=host, token=token, heartbeat=time.time(),
                                     attempts=c.attempts + 1, updated=time.time()))
                got = [r[0] for r in conn.execute(sa.select(c.key).where(c.study == self.study, c.token == token))]
            claimed.extend(got)
        return claimed

    def release(self, keys: Sequence[str], worker: str) -> None:
        """Give claimed, unfinished runs back to the queue (Ctrl-C)."""
        if not keys:
            return
        c = self.runs.c
        with self.engine.begin() as conn:
            conn.execute(self.runs.update().where(c.study == self.study, c.key.in_(list(keys)), c.state == RUNNING,
                                                  c.worker == worker)
                         .values(state=PENDING, token=None, updated=time.time()))

    def beat(self, keys: Sequence[str], worker: str) -> None:
        c = self.runs.c
        with self.engine.begin() as conn:
            conn.execute(self.runs.update().where(c.study == self.study, c.key.in_(list(keys)), c.worker == worker,
                                                  c.state == RUNNING).values(heartbeat=time.time()))

    @contextmanager
    def heartbeats(self, keys: Sequence[str], worker: str) -> Iterator[None]:
        """Refresh the heartbeat of ``keys`` every ``heartbeat_s`` seconds while the block runs."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.heartbeat_s):
                try:
                    self.beat(keys, worker)
                except Exception:  # noqa: BLE001 - a lost connection must not kill the training
                    pass

        t = threading.Thread(target=loop, daemon=True, name="mmib-study-heartbeat")
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join(timeout=5)

    # ------------------------------------------------------------------ finishing
    def finish(self, key: str, worker: str, *, results: dict[str, Any] | None, history: list[dict[str, Any]] | None,
               error: str | None) -> None:
        c = self.runs.c
        with self.engine.begin() as conn:
            conn.execute(self.runs.update().where(c.study == self.study, c.key == key).values(
                state=DONE if results is not None else FAILED, error=error, updated=time.time(), token=None,
                results=_json(results) if results is not None else None,
                history=_json(history) if history is not None else None, worker=worker))

    def set_analyses(self, key: str, analyses: dict[str, Any]) -> None:
        c = self.runs.c
        with self.engine.begin() as conn:
            conn.execute(self.runs.update().where(c.study == self.study, c.key == key)
                         .values(analyses=_json(analyses), updated=time.time()))

    # ------------------------------------------------------------------ reading
    def rows(self, keys: Iterable[str] | None = None) -> dict[str, RunRow]:
        sa = self._sa
        c = self.runs.c
        with self.engine.begin() as conn:
            found = conn.execute(sa.select(c.key, c.grp, c.state, c.path, c.host, c.worker, c.attempts, c.error,
                                           c.results, c.history, c.analyses).where(c.study == self.study)).all()
        wanted = set(keys) if keys is not None else None
        out = {}
        for r in found:
            if wanted is not None and r[0] not in wanted:
                continue
            out[r[0]] = RunRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6] or 0, r[7],
                               json.loads(r[8]) if r[8] else None, json.loads(r[9]) if r[9] else None,
                               json.loads(r[10]) if r[10] else {})
        return out

    def value(self, key: str) -> Any:
        sa = self._sa
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(self.values.c.value).where(self.values.c.key == key)).first()
        return json.loads(row[0]) if row else None

    def set_value(self, key: str, value: Any) -> None:
        sa = self._sa
        try:
            with self.engine.begin() as conn:
                conn.execute(self.values.insert().values(key=key, value=_json(value)))
        except sa.exc.IntegrityError:
            with self.engine.begin() as conn:
                conn.execute(self.values.update().where(self.values.c.key == key).values(value=_json(value)))

    def close(self) -> None:
        self.engine.dispose()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
