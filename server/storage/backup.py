"""`sarah-server backup` and `restore` of a SQLite database.

A backup is SQLite's online backup API, a page range per step, reading one pinned WAL
snapshot: writers carry on throughout, and the copy is the database as of one instant.
A restore replaces the file only while no server holds it (filelock.py). PostgreSQL has
its own tools (pg_dump, pg_restore); docs/operations.md shows them.
"""

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from server.storage.database import LOCK_WAIT_MS, is_sqlite, open_database
from server.storage.filelock import lock_exclusive
from server.storage.migrations import LATEST

DEFAULT_PAGES = 1024  # per step: 4 MiB of 4 KiB pages
_LEFTOVERS = ("-wal", "-shm", "-journal")  # what SQLite keeps beside a database file


@dataclass(frozen=True)
class Summary:
    """What a backup file holds."""

    path: Path
    leads: int
    version: int
    size: int


def database_file(url: str, action: str) -> Path:
    """The SQLite file of `url`; PostgreSQL's answer is pg_dump or pg_restore."""
    db = open_database(url, pool_size=1)
    if not is_sqlite(db):
        tool = ("pg_dump --format=custom --file=PATH DATABASE_URL" if action == "backup"
                else "pg_restore --no-owner --exit-on-error --dbname=DATABASE_URL PATH")
        raise ValueError(f"{action} handles SQLite databases only; PostgreSQL has its own "
                         f"tools: `{tool}` (see docs/operations.md, \"Backup and restore\")")
    if db.database in ("", ":memory:"):
        raise ValueError(f"{url} is not a database file")
    return Path(db.database).absolute()


def backup(url: str, target: Path, force: bool = False,
           pages: int = DEFAULT_PAGES) -> Summary:
    """Copy the live database of `url` to `target`, which appears only once complete."""
    if pages < 1:
        raise ValueError("--pages must be at least 1")
    source = database_file(url, "backup")
    _check_readable(source, "database")
    _check_writable(target, force)
    if target.exists() and target.samefile(source):
        raise ValueError(f"{target} is the database itself; back up to another file")
    with (_reported(f"cannot back up {source}"), _connect(source, mode="rw") as live,
          _scratch(target) as scratch):
        _pin_snapshot(live)
        _copy(live, scratch, pages)
        summary = inspect(scratch, shown=source)
        if force:
            os.replace(scratch, target)
        else:
            try:  # a hard link never replaces: no race with a file made meanwhile
                os.link(scratch, target)
            except FileExistsError:
                raise ValueError(_exists(target)) from None
    _sync_folder(target.parent)
    return Summary(target, summary.leads, summary.version, summary.size)


def restore(url: str, source: Path) -> tuple[Summary, Path]:
    """Make the backup `source` the database of `url`; refuse while a server uses it."""
    target = database_file(url, "restore")
    _check_readable(source, "backup")
    summary = inspect(source)  # before anything is touched
    if target.exists() and target.samefile(source):
        raise ValueError(f"{source} is the database itself")
    target.parent.mkdir(parents=True, exist_ok=True)
    existed, replaced = target.exists(), False
    lock = lock_exclusive(target)
    try:
        with (_reported(f"cannot restore {source}"), _connect(source, mode="ro") as backup_file,
              _scratch(target) as scratch):
            _copy(backup_file, scratch, DEFAULT_PAGES)
            if existed:
                os.chmod(scratch, target.stat().st_mode & 0o777)
            _checkpoint(target)
            for suffix in _LEFTOVERS:  # the old database's: they would corrupt the new one
                Path(f"{target}{suffix}").unlink(missing_ok=True)
            os.replace(scratch, target)
            replaced = True
        _sync_folder(target.parent)
    finally:
        if not existed and not replaced:  # the empty file lock_exclusive made
            target.unlink(missing_ok=True)
        os.close(lock)
    return summary, target


def inspect(path: Path, shown: Path | None = None) -> Summary:
    """Check `path` is an intact SarahService database this server can serve; errors name
    `shown` (the live database, when `path` is its copy)."""
    name = shown or path
    try:
        with _connect(path, mode="ro") as conn:
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check(5)")]
            if problems != ["ok"]:
                raise ValueError(f"{name} is damaged: {'; '.join(problems)}")
            tables = {row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {"schema_migrations", "conversation"} <= tables:
                raise ValueError(f"{name} is a SQLite database, but not SarahService's "
                                 "(it has no schema_migrations and conversation tables)")
            version = conn.execute('SELECT MAX("version") FROM "schema_migrations"').fetchone()[0]
            leads = conn.execute('SELECT COUNT(*) FROM "conversation"').fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{name} is not a SQLite database ({exc})") from None
    if version is None:
        raise ValueError(f"{name} records no schema version: not SarahService's database")
    if version > LATEST:
        raise ValueError(f"{name} has schema version {version}, newer than this "
                         f"sarah-server's {LATEST}: restore it with a newer sarah-server")
    return Summary(path, int(leads), int(version), path.stat().st_size)


@contextlib.contextmanager
def _reported(what: str) -> Iterator[None]:
    """A driver error as one clear line for the command to print."""
    try:
        yield
    except sqlite3.Error as exc:
        raise ValueError(f"{what}: {exc}") from None


@contextlib.contextmanager
def _connect(path: Path, mode: str) -> Iterator[sqlite3.Connection]:
    # mode=ro or rw: never create a database where a file was expected.
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode={mode}", uri=True,
                           isolation_level=None, timeout=LOCK_WAIT_MS / 1000)
    try:
        yield conn
    finally:
        conn.close()


def _pin_snapshot(live: sqlite3.Connection) -> None:
    """Read the WAL database through one open read transaction. Every step of the backup
    then copies that one snapshot: writers commit beside it (a WAL reader blocks nobody),
    and their commits do not restart the backup, which an unpinned copy would do at
    every step under steady writes. (Only the checkpoint waits, so the WAL grows until
    the backup ends.) Outside WAL mode a held read would block writers: do not pin."""
    if live.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
        live.execute("BEGIN")
        live.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()


def _copy(source: sqlite3.Connection, scratch: Path, pages: int) -> None:
    with _connect(scratch, mode="rw") as copy:
        source.backup(copy, pages=pages)
        # One self-contained file, with no -wal to carry beside it.
        copy.execute("PRAGMA journal_mode=DELETE")
    with open(scratch, "rb") as written:
        os.fsync(written.fileno())


@contextlib.contextmanager
def _scratch(target: Path) -> Iterator[Path]:
    """A new file beside `target` (so a rename is atomic), private to its owner (a backup
    holds personal data), gone when the block ends."""
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(name)
    finally:
        for suffix in ("", *_LEFTOVERS):
            Path(f"{name}{suffix}").unlink(missing_ok=True)


def _checkpoint(path: Path) -> None:
    """Fold the old database's WAL into its file first: a crash between removing the WAL
    and the rename then loses nothing of it. Best effort: it may not be a database."""
    with contextlib.suppress(sqlite3.Error), _connect(path, mode="rw") as old:
        old.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _sync_folder(folder: Path) -> None:
    """Make a rename in `folder` survive a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_readable(path: Path, what: str) -> None:
    if not path.exists():
        raise ValueError(f"no {what} at {path}")
    if not path.is_file():
        raise ValueError(f"{path} is not a file")


def _check_writable(target: Path, force: bool) -> None:
    if not target.parent.is_dir():
        raise ValueError(f"cannot write {target}: folder {target.parent} does not exist")
    if target.is_dir():
        raise ValueError(f"{target} is a folder: give the backup's file name")
    if target.exists() and not force:
        raise ValueError(_exists(target))


def _exists(target: Path) -> str:
    return (f"{target} already exists: pass --force to replace it (refused so that a "
            "backup is never overwritten by mistake)")
