"""``hounsfield sample DIR``: the synthetic patient the README's tour starts from."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom

from hounsfield import sample
from hounsfield.imaging import read_dataset
from hounsfield.imaging.series import load_series
from support import hounsfield


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return hounsfield("sample", *args, cwd=cwd)


def test_the_command_writes_a_ct_and_an_mr_series_the_same_every_time(tmp_path: Path) -> None:
    done = _run("tour", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sample.CT_STUDY_UID in done.stdout and sample.MR_STUDY_UID in done.stdout
    ct = sorted((tmp_path / "tour" / "ct").iterdir())
    mr = sorted((tmp_path / "tour" / "mr").iterdir())
    assert [p.name for p in ct] == [f"CT00{i}.dcm" for i in range(1, 6)]
    assert [p.name for p in mr] == [f"MR00{i}.dcm" for i in range(1, 4)]
    first = {p.name: p.read_bytes() for p in ct + mr}
    assert _run("tour", cwd=tmp_path).returncode == 0
    assert {p.name: p.read_bytes() for p in ct + mr} == first  # deterministic: the README names the study
    for path in ct + mr:
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert ds.PatientID == sample.PATIENT_ID
        assert ds.StudyInstanceUID == (sample.CT_STUDY_UID if ds.Modality == "CT" else sample.MR_STUDY_UID)
    assert len({pydicom.dcmread(p).SOPInstanceUID for p in ct + mr}) == 8


def test_the_ct_is_a_consistent_volume_in_hounsfield_units_with_windows(tmp_path: Path) -> None:
    written = sample.write_sample(tmp_path)
    volume = load_series([tmp_path / "ct"])
    assert volume.values.shape == (5, 128, 128)
    assert volume.spacing == (5.0, 2.0, 2.0)
    assert np.allclose(np.diff(volume.positions[:, 2]), 5.0)
    assert [Path(p).name for p in volume.paths] == [p.name for p in written.ct]
    values = set(np.unique(volume.values).tolist())
    assert values == {sample.AIR, sample.LUNG, sample.FAT, sample.SOFT_TISSUE, sample.BONE}
    assert volume.values[2, 64, 64] == sample.SOFT_TISSUE and volume.values[2, 0, 0] == sample.AIR
    # slices differ (the lung pocket grows)
    assert len({(volume.values[k] == sample.LUNG).sum() for k in range(5)}) == 5
    header = read_dataset(written.ct[0], pixels=False)
    assert (float(header.RescaleIntercept), header.RescaleType) == (-1024.0, "HU")
    assert [float(c) for c in header.WindowCenter] == [40, 500]
    assert list(header.WindowCenterWidthExplanation) == ["BRAIN", "BONE"]
    assert float(header.SliceThickness) == 5.0 and float(header.SliceLocation) == -10.0
    mr = load_series([tmp_path / "mr"])
    assert mr.values.shape == (3, 128, 128) and mr.values.max() == 1500


def test_a_file_in_the_way_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "tour").write_text("not a folder")
    done = _run("tour", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["error: cannot write the sample into tour: not a directory"]
