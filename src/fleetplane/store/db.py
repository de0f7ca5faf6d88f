"""Engine and unit of work: the one place that knows SQLite pragmas and pool settings."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    String,
    any_,
    bindparam,
    create_engine,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import make_url
from sqlalchemy.orm import QueryableAttribute, Session, sessionmaker

IMMEDIATE = "fleetplane_sqlite_immediate"
SQLITE_POOL_SIZE = 40
POSTGRES_POOL_SIZE = 20


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers go on while the single writer commits; foreign keys are off by default.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    # A write transaction takes the write lock up front (BEGIN IMMEDIATE): a deferred one that
    # read first would fail at once with SQLITE_BUSY if another writer committed meanwhile.
    immediate = connection.get_execution_options().get(IMMEDIATE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: str) -> Engine:
    """An engine for a SQLAlchemy URL, with the per-database settings fleetplane relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # The driver's own transaction handling is off so that `_sqlite_begin` decides.
        # Connections are kept for every thread that may read at once (the request threadpool
        # has 40): one opened past the pool is closed after use, and opening one runs the
        # pragmas, which under load cost more than the query.
        engine = create_engine(
            url,
            pool_size=SQLITE_POOL_SIZE,
            max_overflow=SQLITE_POOL_SIZE,
            connect_args={"check_same_thread": False, "timeout": 10, "isolation_level": None},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    # A connection opened past the pool is closed after its one use, and opening one costs a
    # PostgreSQL backend start: keep enough for the request threadpool's concurrent reads.
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=POSTGRES_POOL_SIZE,
        max_overflow=10,
        pool_timeout=10,
        connect_args={"connect_timeout": 5},
    )


def one_of(
    column: ColumnElement[Any] | QueryableAttribute[Any], values: list[str], *, dialect: str
) -> ColumnElement[bool]:
    """`column IN values`, for the hot path's batched reads of hundreds of keys.

    On PostgreSQL the values travel as one array parameter (`= ANY(...)`): an IN list of
    500 parameters is expanded by SQLAlchemy and split and adapted by psycopg, one by one, in
    Python, holding the GIL that the serving thread needs.
    """
    if dialect == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(String)))
    return column.in_(values)


class Database:
    """An engine and its session factory; services receive sessions from `unit_of_work`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time; queueing this process's writers on a lock hands
        # the turn over at once instead of through SQLite's sleeping busy handler.
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else None

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self.engine.dialect.name

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        """A session whose changes commit together at the end, or roll back on any error."""
        with self._writing(), self.sessions() as session, session.begin():
            session.connection(execution_options={IMMEDIATE: True})
            yield session

    @contextmanager
    def _writing(self) -> Iterator[None]:
        if self._write_lock is None:
            yield
            return
        with self._write_lock:
            yield

    @contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """A connection in a write transaction, for batched Core statements."""
        with (
            self._writing(),
            self.engine.connect().execution_options(**{IMMEDIATE: True}) as connection,
            connection.begin(),
        ):
            yield connection

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads only."""
        with self.sessions() as session:
            yield session

    def ping(self) -> None:
        """Raise if the database does not answer."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
