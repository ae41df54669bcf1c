"""The file store: bytes under a browsable layout, written atomically; it knows paths, not DICOM.

A write goes to a temporary file in the destination directory, is fsync'ed, renamed over the final name and
the directory is fsync'ed, so a reader (or a crash) sees either nothing or the whole file.

Beside the layout: ``.incoming`` holds data still arriving (removed after a crash), ``.pending`` holds
instances that were received whole and made durable but are not indexed yet (indexed after a crash), and
``.quarantine`` holds received files the indexer could not take, each with a ``.json`` saying why.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import logging
import time
import os
import re
import shutil
import tempfile
import uuid
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from hounsfield.errors import StorageFull


class PathTaken(Exception):
    """A file is already at the place a new file was to be put: nothing was overwritten."""

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
def _flocked(path: Path, *, create: bool = False, wait: bool = False) -> Iterator[bool]:
    """An exclusive flock on ``path``, held inside the block; False when another open file holds it (unless
    ``wait``: then it waits for it) or the file is gone. Each claim opens the file anew, so it holds between the threads of one process
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
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
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


def _rename(src: Path, dest: Path, exclusive: bool) -> None:
    """``os.replace``, or with ``exclusive`` a rename that fails (``PathTaken``) rather than replace a file:
    a hard link to the new name, which the kernel refuses atomically when the name exists, then the old name
    removed. Where the file system has no hard links, an existence check first (callers hold the instance's
    claim, so no other hounsfield store races it)."""
    if not exclusive:
        os.replace(src, dest)
        return
    try:
        os.link(src, dest)
    except FileExistsError as exc:
        raise PathTaken(str(dest)) from exc
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if dest.exists():
            raise PathTaken(str(dest)) from exc
        os.replace(src, dest)
        return
    os.unlink(src)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def claim_stripe(sop_instance_uid: str) -> int:
    """Which of the ``CLAIM_STRIPES`` claims (``FileStore.claiming_instance``) covers a SOP Instance UID."""
    return zlib.crc32(sop_instance_uid.encode("utf-8", "replace")) % CLAIM_STRIPES


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
        self.quarantine_dir = self.root / ".quarantine"

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

    def put_bytes(self, rel: str, data: bytes, *, exclusive: bool = False) -> None:
        fd, tmp = self.new_incoming()
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            self.put_file(rel, tmp, exclusive=exclusive)
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
    def claiming_instance(self, sop_instance_uid: str, *, wait: bool = False) -> Iterator[bool]:
        """Held while an instance is stored: two copies of one SOP Instance UID (sent twice, or over two ways
        in at once) are never stored at once, which would put both at the same place in the layout. One of
        ``CLAIM_STRIPES`` lock files, chosen by the UID; whether it was had (it waits only with ``wait``)."""
        with _flocked(self.claims / f"{claim_stripe(sop_instance_uid):03d}.lock", create=True, wait=wait) as had:
            yield had

    def pending_files(self) -> list[Path]:
        """Pending instances, oldest first (their names start with the arrival time)."""
        return sorted(p for p in self.pending.iterdir() if p.suffix == ".dcm")

    def put_link(self, rel: str, src: Path, *, exclusive: bool = False, sync_dir: bool = True) -> None:
        """Put a durable file at ``rel`` while keeping ``src`` (a hard link where the file system allows).
        Without ``sync_dir`` the caller makes the new directory entry durable (``sync_dirs``)."""
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
            self.put_file(rel, tmp, synced=synced, exclusive=exclusive, sync_dir=sync_dir)
        finally:
            tmp.unlink(missing_ok=True)

    def put_file(self, rel: str, src: Path, *, synced: bool = False, exclusive: bool = False,
                 sync_dir: bool = True) -> None:
        """Move the complete file ``src`` to ``rel`` atomically (copying first if on another file system);
        ``synced`` says its data is already durable. With ``exclusive``, a file already at ``rel`` is never
        replaced (``PathTaken``): a new instance must not take another one's place."""
        self._move(src, self.path(rel), synced=synced, exclusive=exclusive, sync_dir=sync_dir)

    def sync_dirs(self, rels: Iterable[str]) -> None:
        """Make the directory entries of the files at ``rels`` durable: one fsync per directory."""
        if self.fsync:
            for parent in sorted({self.path(rel).parent for rel in rels}):
                _fsync_dir(parent)

    def _move(self, src: Path, dest: Path, *, synced: bool = False, exclusive: bool = False,
              sync_dir: bool = True) -> None:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if self.fsync and not synced:
                with open(src, "rb+") as f:
                    os.fsync(f.fileno())
            try:
                _rename(src, dest, exclusive)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
                try:
                    with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
                        shutil.copyfileobj(f, out, 1 << 20)
                        out.flush()
                        if self.fsync:
                            os.fsync(out.fileno())
                    _rename(Path(tmp), dest, exclusive)
                finally:
                    Path(tmp).unlink(missing_ok=True)
            if self.fsync and sync_dir:
                _fsync_dir(dest.parent)
        except OSError as exc:
            raise StorageFull(f"cannot write {dest.name}: {exc.strerror or exc}") from exc

    def quarantine(self, src: Path, reason: str, **details: str) -> Path:
        """Move ``src`` out of the way into ``.quarantine`` (same name), beside a ``.json`` record of why and
        when; the record is written first, so a quarantined file always has its reason."""
        self.quarantine_dir.mkdir(exist_ok=True)
        dest = self.quarantine_dir / src.name
        record = {"name": src.name, "reason": reason, "quarantined_at": time.time(),
                  "size": src.stat().st_size, **details}
        note = dest.with_name(dest.name + ".json")
        note.write_text(json.dumps(record))
        os.replace(src, dest)
        if self.fsync:
            _fsync_dir(self.quarantine_dir)
            _fsync_dir(src.parent)
        return dest

    def quarantined(self) -> list[dict]:
        """The records of the quarantined files, oldest first."""
        if not self.quarantine_dir.is_dir():
            return []
        records = []
        for note in self.quarantine_dir.glob("*.json"):
            try:
                record = json.loads(note.read_text())
            except (OSError, ValueError):
                continue
            if (self.quarantine_dir / record.get("name", "")).is_file():
                records.append(record)
        return sorted(records, key=lambda r: r.get("quarantined_at", 0))

    def quarantined_file(self, name: str) -> Path:
        """The quarantined file ``name`` (a name from ``quarantined``; never a path outside the folder)."""
        path = self.quarantine_dir / Path(name).name
        if Path(name).name != name or not path.is_file() or path.suffix == ".json":
            raise FileNotFoundError(name)
        return path

    def release(self, name: str) -> None:
        """Delete a quarantined file and its record (an administrator's decision)."""
        path = self.quarantined_file(name)
        path.unlink()
        self.release_record(name)

    def release_record(self, name: str) -> None:
        (self.quarantine_dir / f"{Path(name).name}.json").unlink(missing_ok=True)

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
