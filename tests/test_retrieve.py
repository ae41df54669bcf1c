"""Choosing how an instance travels: the stored transfer syntax read from the file's own meta group."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.data.data_manager import DATA_ROOT
from pydicom.filereader import read_file_meta_info

from conftest import SHARED_DATA
from hounsfield.archive import StoredInstance
from hounsfield.retrieve import _file_syntax, _meta_syntax


def part10_files() -> list[Path]:
    # pydicom's bundled files, listed from its folder: get_testdata_files("*.dcm") also tries to download its
    # external set, which without a network costs ~15 s of timeouts
    files = sorted((Path(DATA_ROOT) / "test_files").rglob("*.dcm"))
    if SHARED_DATA.is_dir():
        files += [p for p in SHARED_DATA.rglob("*") if p.is_file()]
    out = []
    for path in files:
        try:
            read_file_meta_info(path).TransferSyntaxUID
        except Exception:  # noqa: BLE001 - not a Part-10 file with a transfer syntax: not this test's
            continue
        out.append(path)
    return out


def test_the_meta_group_read_from_the_bytes_says_what_pydicom_reads() -> None:
    files = part10_files()
    assert len(files) > 50
    for path in files:
        expected = str(read_file_meta_info(path).TransferSyntaxUID)
        assert _meta_syntax(path) in (expected, None), path  # None: laid out otherwise, pydicom reads it
        instance = StoredInstance("1.2", "1.2", "1.2", "1.2", expected, path, path.stat().st_size)
        syntax = _file_syntax(instance)
        assert syntax is None or str(syntax) == expected, path


@pytest.mark.parametrize("content", [b"", b"\0" * 200, b"\0" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00" + b"\xff" * 4])
def test_files_that_are_not_laid_out_as_expected_fall_back(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "odd.dcm"
    path.write_bytes(content)
    assert _meta_syntax(path) is None
