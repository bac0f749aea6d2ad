"""The writers' lock of a SQLite file, shared by a server's worker processes."""

from pathlib import Path

from server.storage.writer_lock import WriterLock


def test_a_second_holder_waits_until_the_first_releases(tmp_path: Path) -> None:
    # Each WriterLock opens its own descriptor, as each worker process does.
    first, second = WriterLock(tmp_path / "sarah.db"), WriterLock(tmp_path / "sarah.db")
    try:
        assert first.acquire(timeout=1)
        assert not second.acquire(timeout=0.01)  # refused while the first holds it
        first.release()
        assert second.acquire(timeout=1)
        second.release()
    finally:
        first.close()
        second.close()


def test_the_lock_file_sits_beside_the_database(tmp_path: Path) -> None:
    lock = WriterLock(tmp_path / "sarah.db")
    try:
        assert lock.acquire(timeout=1)
        lock.release()
    finally:
        lock.close()
    assert (tmp_path / "sarah.db.writer-lock").exists()
    assert not (tmp_path / "sarah.db").exists()  # the database itself is not touched
