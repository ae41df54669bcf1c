"""The indexer takes pending instances in batches (archive.INDEX_BATCH): one commit for a batch, the same rows
and files as one at a time, and a batch that fails as a whole indexed again instance by instance."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import event, func, select

from factories import ct_dataset, encode
from hounsfield import archive, config
from hounsfield.models import Instance, Series
from hounsfield.pacs import Pacs


@pytest.fixture
def pacs(tmp_path: Path, database_url: str):
    p = Pacs(config.load(None, environ={}, data_dir=tmp_path / "data", database_url=database_url))
    yield p
    p.close()


def accept(pacs: Pacs, n: int, **attrs: object) -> list:
    sent = []
    for _ in range(n):
        ds = ct_dataset(**attrs)
        path = pacs.files.incoming / f"{generate_uid()}.part"
        path.write_bytes(encode(ds))
        pacs.archive.accept_file(path, "BATCH")
        sent.append(ds)
    return sent


def commits(pacs: Pacs) -> list[int]:
    seen: list[int] = []
    event.listen(pacs.db.engine, "commit", lambda conn: seen.append(1))
    return seen


def test_a_batch_is_one_commit_with_every_row_and_file(pacs: Pacs) -> None:
    n = archive.INDEX_BATCH + 5
    sent = accept(pacs, n, PatientID="P-BATCH", SeriesInstanceUID="1.2.826.0.1.3680043.8.498.55.1")
    seen = commits(pacs)
    assert pacs.archive.index_pending() == n
    assert len(seen) == 2  # ceil(37 / 32) transactions, not 37
    assert pacs.files.pending_files() == []
    for ds in sent:
        assert pacs.archive.instance(ds.SOPInstanceUID).path.read_bytes() == encode(ds)
    with pacs.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Series)) == 1
        assert s.scalar(select(func.count()).select_from(Instance)) == n


def test_a_batch_that_fails_as_a_whole_is_indexed_one_by_one(pacs: Pacs, monkeypatch: pytest.MonkeyPatch) -> None:
    sent = accept(pacs, 5, PatientID="P-FALLBACK")

    def broken(self: archive.Archive, ready: list) -> None:
        raise RuntimeError("as if one row of the batch were refused")

    monkeypatch.setattr(archive.Archive, "_store_batch", broken)
    assert pacs.archive.index_pending() == 5
    assert sorted(i.sop_instance_uid for i in pacs.archive.instances()) == sorted(ds.SOPInstanceUID for ds in sent)
    assert pacs.files.pending_files() == [] and pacs.archive.quarantined() == []


def test_a_batch_left_half_done_by_a_failure_leaves_no_file_behind(pacs: Pacs, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after some files were linked into the layout removes them before the one-by-one retry."""
    sent = accept(pacs, 4, PatientID="P-HALF")
    index = archive.Archive._index
    calls = []

    def fails_on_the_third(self: archive.Archive, conn, header, rel, origin, *, replace, ids=None) -> None:
        calls.append(rel)
        if ids is not None and len(calls) == 3:
            raise RuntimeError("third row refused")
        index(self, conn, header, rel, origin, replace=replace, ids=ids)

    monkeypatch.setattr(archive.Archive, "_index", fails_on_the_third)
    assert pacs.archive.index_pending() == 4
    stored = {i.sop_instance_uid: i.path for i in pacs.archive.instances()}
    assert sorted(stored) == sorted(ds.SOPInstanceUID for ds in sent)
    files = [p for p in pacs.files.root.rglob("*.dcm") if ".pending" not in p.parts]
    assert sorted(files) == sorted(stored.values())  # no file of the failed batch left without its row


def test_a_second_copy_in_one_batch_follows_the_duplicate_policy(pacs: Pacs) -> None:
    first = ct_dataset(StudyDescription="FIRST")
    second = ct_dataset(StudyDescription="SECOND", SOPInstanceUID=first.SOPInstanceUID,
                        StudyInstanceUID=first.StudyInstanceUID, SeriesInstanceUID=first.SeriesInstanceUID)
    for ds in (first, *[ct_dataset() for _ in range(3)], second):
        path = pacs.files.incoming / f"{generate_uid()}.part"
        path.write_bytes(encode(ds))
        pacs.archive.accept_file(path, "BATCH")
    assert pacs.archive.index_pending() == 5
    assert pacs.archive.instance(first.SOPInstanceUID).path.read_bytes() == encode(first)  # "keep"
    assert pacs.files.pending_files() == []
