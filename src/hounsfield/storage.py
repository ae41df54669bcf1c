"""The file store: bytes under a browsable layout, written atomically; it knows paths, not DICOM.

A write goes to a temporary file in the destination directory, is fsync'ed, renamed over the final name and
the directory is fsync'ed, so a reader (or a crash) sees either nothing or the whole file.

Beside the layout: ``.incoming`` holds data still arriving (removed after a crash) and ``.pending`` holds
instances that were received whole and made durable but are not indexed yet (indexed after a crash).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import logging
import os
import re
import shutil
import tempfile
import uuid
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from hounsfield.errors import StorageFull

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9._^-]+")


def safe_component(value: str, fallback: str = "_") -> str:
    """A path component made of the value's harmless characters (patient IDs can hold anything)."""
    cleaned = _UNSAFE.sub("_", value.strip()).strip("._")[:64]
    return cleaned or fallback


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        call = ctypes.CDLL(None).sync_file_range
    except (OSError, AttributeError):  # not Linux
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    return call


_SYNC_FILE_RANGE = _sync_file_range()
SYNC_FILE_RANGE_WRITE = 2


CLAIM_STRIPES = 256
_no_flock_logged = False


@contextmanager
def _flocked(path: Path, *, create: bool = False) -> Iterator[bool]:
    """An exclusive flock on ``path``, held inside the block; False when another open file holds it (it never
    waits) or the file is gone. Each claim opens the file anew, so it holds between the threads of one process
    as between processes, and it goes with a crash. Where the file system refuses flock (some network file
    systems), nothing is claimed and every caller goes ahead: the index's unique keys still keep one row per
    instance (logged once)."""
    global _no_flock_logged
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0), 0o644)
    except FileNotFoundError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        except OSError as exc:
            if not _no_flock_logged:
                log.warning("no flock on %s (%s): indexing goes ahead unclaimed", path.parent, exc)
                _no_flock_logged = True
        yield True
    finally:
        os.close(fd)  # releases the flock


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FileStore:
    """Files under ``root``; every public path argument is relative to it."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.incoming = self.root / ".incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.pending = self.root / ".pending"
        self.pending.mkdir(exist_ok=True)
        self.claims = self.pending / "claims"
        self.claims.mkdir(exist_ok=True)

    def path(self, rel: str) -> Path:
        return self.root / rel

    def open(self, rel: str) -> BinaryIO:
        return open(self.path(rel), "rb")

    def exists(self, rel: str) -> bool:
        return self.path(rel).is_file()

    def new_incoming(self) -> tuple[int, Path]:
        """A fresh temporary file on the store's own file system, for data still arriving."""
        fd, name = tempfile.mkstemp(dir=self.incoming, suffix=".part")
        return fd, Path(name)

    def start_writeback(self, fd: int, offset: int, length: int) -> None:
        """Start writing part of a file being written to disk, without waiting (Linux ``sync_file_range``), so
        that the fsync which makes it durable once it is complete finds most of it written already (data that
        arrives over the network goes out while the rest is received). Nothing when fsync is off."""
        if self.fsync and _SYNC_FILE_RANGE is not None:
            _SYNC_FILE_RANGE(fd, offset, length, SYNC_FILE_RANGE_WRITE)

    def put_bytes(self, rel: str, data: bytes) -> None:
        fd, tmp = self.new_incoming()
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            self.put_file(rel, tmp)
        finally:
            tmp.unlink(missing_ok=True)

    def put_pending(self, src: Path, name: str) -> Path:
        """Make the complete file ``src`` durable as ``.pending/name`` (fsync, rename, directory fsync)."""
        dest = self.pending / name
        self._move(src, dest)
        return dest

    @contextmanager
    def claiming_pending(self, path: Path) -> Iterator[bool]:
        """Held while the pending instance ``path`` is indexed, so that the indexer process and a query that
        helps it (``Archive.settle``) never work on the same file at once, and work side by side on different
        ones. The claim is an flock on the pending file itself. Yields whether the claim was had and the file is
        still pending: not when another one holds it (it is on it; a starved indexer must not hold a query up)
        or has indexed and removed it meanwhile (the names are never reused)."""
        with _flocked(path) as had:
            yield had and path.exists()

    @contextmanager
    def claiming_instance(self, sop_instance_uid: str) -> Iterator[bool]:
        """Held while an instance is stored from the pending queue: two pending copies of one SOP Instance UID
        (sent twice) are never stored at once, which would put both at the same place in the layout. One of
        ``CLAIM_STRIPES`` lock files, chosen by the UID; whether it was had (never waits)."""
        stripe = zlib.crc32(sop_instance_uid.encode("ascii", "replace")) % CLAIM_STRIPES
        with _flocked(self.claims / f"{stripe:03d}.lock", create=True) as had:
            yield had

    def pending_files(self) -> list[Path]:
        """Pending instances, oldest first (their names start with the arrival time)."""
        return sorted(p for p in self.pending.iterdir() if p.suffix == ".dcm")

    def put_link(self, rel: str, src: Path) -> None:
        """Put a durable file at ``rel`` while keeping ``src`` (a hard link where the file system allows)."""
        tmp = self.incoming / f"{uuid.uuid4().hex}.part"
        try:
            os.link(src, tmp)
            synced = True
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                raise
            shutil.copyfile(src, tmp)
            synced = False
        try:
            self.put_file(rel, tmp, synced=synced)
        finally:
            tmp.unlink(missing_ok=True)

    def put_file(self, rel: str, src: Path, *, synced: bool = False) -> None:
        """Move the complete file ``src`` to ``rel`` atomically (copying first if on another file system);
        ``synced`` says its data is already durable."""
        self._move(src, self.path(rel), synced=synced)

    def _move(self, src: Path, dest: Path, *, synced: bool = False) -> None:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if self.fsync and not synced:
                with open(src, "rb+") as f:
                    os.fsync(f.fileno())
            try:
                os.replace(src, dest)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
                with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
                    out.flush()
                    if self.fsync:
                        os.fsync(out.fileno())
                os.replace(tmp, dest)
            if self.fsync:
                _fsync_dir(dest.parent)
        except OSError as exc:
            raise StorageFull(f"cannot write {dest}: {exc.strerror or exc}") from exc

    def delete(self, rel: str) -> None:
        path = self.path(rel)
        path.unlink(missing_ok=True)
        for parent in path.parents:  # prune empty directories up to the root
            if parent == self.root:
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def clean_incoming(self) -> int:
        """Remove partial files left by a crash; returns how many were removed."""
        removed = 0
        for leftover in self.incoming.glob("*"):
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed
