"""Series loading: order by position (not Instance Number), spacing, affine, and the exports."""

from __future__ import annotations

import random
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
from imaging_reference import hu

from hounsfield.errors import InvalidDataset
from hounsfield.imaging import load_series
from hounsfield.imaging.export import export_npz

SERIES = Path("ct") / "philips_head_phantom_5mm"


def _headers(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]


@pytest.fixture()
def shuffled_series(shared_data: Path, tmp_path: Path) -> Path:
    """Copies of the 28 slices with shuffled Instance Numbers and file names."""
    files = sorted((shared_data / SERIES).glob("*.dcm"))
    numbers = list(range(1, len(files) + 1))
    random.Random(4).shuffle(numbers)
    for f, n in zip(files, numbers):
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = n
        ds.save_as(tmp_path / f"x{n:03d}.dcm")
    return tmp_path


def test_shuffled_instance_numbers_sorted_by_position(shuffled_series: Path) -> None:
    volume = load_series([shuffled_series])
    headers = _headers(shuffled_series)
    z = sorted(float(ds.ImagePositionPatient[2]) for ds in headers)  # IOP is axial: normal is +z
    np.testing.assert_allclose(volume.positions[:, 2], z)
    by_z = sorted(headers, key=lambda ds: float(ds.ImagePositionPatient[2]))
    for k in (0, 13, 27):
        np.testing.assert_array_equal(volume.values[k], hu(by_z[k]).astype(np.float32))
    instance_order = [int(pydicom.dcmread(p).InstanceNumber) for p in volume.paths]
    assert instance_order != sorted(instance_order)


def test_spacing_and_affine_from_headers(shared_data: Path) -> None:
    volume = load_series([shared_data / SERIES])
    first = pydicom.dcmread(volume.paths[0])
    assert volume.values.shape == (28, 512, 512) and volume.values.dtype == np.float32
    assert volume.spacing == pytest.approx((5.0, 0.451171875, 0.451171875))
    row_cos = np.array(first.ImageOrientationPatient[:3], float)
    col_cos = np.array(first.ImageOrientationPatient[3:], float)
    dr, dc = (float(v) for v in first.PixelSpacing)
    # PS3.3 C.7.6.2.1.1: P = S + j * dr * col_cos + i * dc * row_cos (+ k * slice step)
    for k, j, i in [(0, 0, 0), (5, 100, 200), (27, 511, 3)]:
        slice_origin = np.array(pydicom.dcmread(volume.paths[k]).ImagePositionPatient, float)
        expected = slice_origin + j * dr * col_cos + i * dc * row_cos
        np.testing.assert_allclose((volume.affine @ [k, j, i, 1])[:3], expected, atol=1e-6)


def test_mixed_series_rejected(shared_data: Path, tmp_path: Path) -> None:
    for name in ("IM0001.dcm", "IM0002.dcm"):
        (tmp_path / name).write_bytes((shared_data / SERIES / name).read_bytes())
    other = pydicom.dcmread(shared_data / SERIES / "IM0003.dcm")
    other.SeriesInstanceUID = pydicom.uid.generate_uid()
    other.save_as(tmp_path / "IM0003.dcm")
    with pytest.raises(InvalidDataset, match="different series"):
        load_series([tmp_path])


def test_npz_export(shared_data: Path, tmp_path: Path) -> None:
    volume = load_series([shared_data / SERIES])
    out = export_npz(volume, tmp_path / "v.npz")
    saved = np.load(out)
    np.testing.assert_array_equal(saved["volume"], volume.values)
    np.testing.assert_allclose(saved["spacing"], [5.0, 0.451171875, 0.451171875])
    np.testing.assert_allclose(saved["affine"], volume.affine)


def test_bundled_ct_as_one_slice_volume(tmp_path: Path) -> None:
    from pydicom import examples

    examples.ct.save_as(tmp_path / "ct.dcm")
    volume = load_series([tmp_path])
    assert volume.values.shape == (1, 128, 128)
    np.testing.assert_array_equal(volume.values[0], hu(examples.ct).astype(np.float32))
    assert nibabel is not None
