"""Every file of the shared data either renders or fails with a clear one-line error naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SHARED_DATA, require_shared_data

from hounsfield.errors import HounsfieldError
from hounsfield.imaging import render_instance

FILES = sorted(str(p.relative_to(SHARED_DATA)) for p in SHARED_DATA.rglob("*.dcm")) if SHARED_DATA.is_dir() else []
NO_PIXELS = {"other/test-SR.dcm", "other/waveform_ecg.dcm", "edge/UN_sequence.dcm", "edge/empty_charset_LEI.dcm"}
MAY_FAIL_PREFIXES = ("malformed/", "rt/dicompyler_breast/rt", "rt/edge/rtplan", "rt/edge/rtstruct")


@pytest.mark.parametrize("rel", FILES or ["<shared data missing>"])
def test_renders_or_fails_clearly(rel: str) -> None:
    data = require_shared_data()
    path = data / rel
    try:
        png = render_instance(path)
    except HounsfieldError as exc:
        message = str(exc)
        assert "\n" not in message and str(path) in message
        assert rel in NO_PIXELS or rel.startswith(MAY_FAIL_PREFIXES), message
        return
    assert png.startswith(b"\x89PNG")
    assert rel not in NO_PIXELS


def test_wsi_multiframe_frames(shared_data: Path) -> None:
    """The tiled WSI: frame 0 renders, the last frame (whose JPEG data pydicom's decoders reject) renders
    or fails in one line naming the file, and a frame beyond the last is a clear error."""
    path = shared_data / "multiframe" / "wsi_jpeg_140frames.dcm"
    assert render_instance(path, frame=0).startswith(b"\x89PNG")
    try:
        render_instance(path, frame=139)
    except HounsfieldError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
    with pytest.raises(HounsfieldError, match="frame 140 out of range"):
        render_instance(path, frame=140)


def test_12bit_jpeg_extended_decodes_as_dcmtk_does(shared_data: Path, tmp_path: Path) -> None:
    """JPGExtended.dcm (12-bit, 1.2.840.10008.1.2.4.51) against dcmtk's dcmdjpeg as the independent decoder."""
    import subprocess

    import pydicom
    from support import dcmtk

    from hounsfield.imaging import frame_values

    src = shared_data / "compressed" / "JPGExtended.dcm"
    out = tmp_path / "native.dcm"
    subprocess.run([dcmtk("dcmdjpeg"), str(src), str(out)], check=True)
    expected = pydicom.dcmread(out).pixel_array.astype("float32")
    assert expected.max() > 255  # really more than 8 bits
    assert (frame_values(src) == expected).all()
