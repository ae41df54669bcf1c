"""Modality LUT, VOI windows, presets, MONOCHROME1 and colour, checked against the standard's formulas."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from imaging_reference import (
    hu,
    linear_exact_window,
    linear_window,
    reference_render,
    sigmoid_window,
)
from PIL import Image
from pydicom import examples
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, convert_color_space, pixel_array

from hounsfield.errors import InvalidDataset
from hounsfield.imaging import (
    PRESETS,
    Window,
    apply_window,
    file_windows,
    frame_values,
    render_instance,
)
from hounsfield.imaging.lut import apply_voi_lut_sequence, modality_transform
from hounsfield.imaging.png import encode_png


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


# ------------------------------------------------------------------ pydicom's bundled files (fresh clone)
def test_ct_hu_values_from_bundled_ct() -> None:
    ds = examples.ct
    raw = pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array
    values = frame_values(ds)
    assert values.dtype == np.float32
    for r, c in [(0, 0), (64, 64), (100, 27)]:
        assert values[r, c] == pytest.approx(raw[r, c] * float(ds.RescaleSlope) + float(ds.RescaleIntercept))


def test_bundled_ct_render_matches_linear_window() -> None:
    got = decode_png(render_instance(get_testdata_file("CT_small.dcm"), window=(40, 400)))
    ref = linear_window(hu(pydicom.dcmread(get_testdata_file("CT_small.dcm"))), 40, 400)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 0.5 + 1e-9


def test_bundled_mr_uses_files_first_window() -> None:
    path = get_testdata_file("MR_small.dcm")
    got = decode_png(render_instance(path))
    ds = pydicom.dcmread(path)
    assert np.abs(got - reference_render(ds)).max() <= 0.5 + 1e-9


def test_render_from_bytes_and_dataset_equal_render_from_path() -> None:
    path = get_testdata_file("MR_small.dcm")
    with open(path, "rb") as fh:
        data = fh.read()
    expected = render_instance(path)
    assert render_instance(data) == expected
    assert render_instance(pydicom.dcmread(path)) == expected


# ------------------------------------------------------------------ VOI LUT functions (C.11.2.1.2, C.11.2.1.3)
X = np.linspace(-1200.0, 1200.0, 4801)


@pytest.mark.parametrize("c,w", [(40, 400), (-600, 1500), (0.5, 2), (1000, 1)])
def test_linear_window_formula(c: float, w: float) -> None:
    got = apply_window(X, Window(c, w)) * 255
    if w == 1:  # C.11.2.1.2.1: x <= c - 0.5 -> ymin, else ymax
        expected = np.where(X <= c - 0.5, 0.0, 255.0)
    else:
        expected = linear_window(X, c, w)
    np.testing.assert_allclose(got, expected, atol=1e-9)


@pytest.mark.parametrize("c,w", [(40, 400), (-600, 1500), (10, 0.5)])
def test_linear_exact_and_sigmoid_formulas(c: float, w: float) -> None:
    np.testing.assert_allclose(apply_window(X, Window(c, w, "LINEAR_EXACT")), linear_exact_window(X, c, w))
    np.testing.assert_allclose(apply_window(X, Window(c, w, "SIGMOID")), sigmoid_window(X, c, w))


def test_invalid_windows_rejected() -> None:
    with pytest.raises(ValueError):
        Window(40, 0.5)  # LINEAR needs width >= 1
    with pytest.raises(ValueError):
        Window(40, 0, "SIGMOID")
    with pytest.raises(ValueError):
        Window(40, 10, "GAMMA")  # type: ignore[arg-type]


def _synthetic(values: np.ndarray, **elements: object) -> Dataset:
    ds = Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = values.astype("<i2").tobytes()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def test_several_windows_with_explanations_and_function() -> None:
    ds = _synthetic(np.zeros((2, 2)), WindowCenter=[40, -600], WindowWidth=[400, 1500],
                    WindowCenterWidthExplanation=["SOFT", "LUNG"], VOILUTFunction="SIGMOID")
    assert file_windows(ds) == [Window(40, 400, "SIGMOID", "SOFT"), Window(-600, 1500, "SIGMOID", "LUNG")]


def test_sigmoid_file_window_is_rendered_with_sigmoid() -> None:
    values = np.arange(-512, 512, dtype=np.int16).reshape(32, 32)
    ds = _synthetic(values, WindowCenter=0, WindowWidth=200, VOILUTFunction="SIGMOID")
    got = decode_png(render_instance(ds)).astype(float)
    expected = np.floor(sigmoid_window(values.astype(float), 0, 200) * 255 + 0.5)
    np.testing.assert_array_equal(got, expected)


def test_voi_lut_sequence_applied_and_scaled_by_bit_depth() -> None:
    values = np.arange(-8, 8, dtype=np.int16).reshape(4, 4)
    item = Dataset()
    item.LUTDescriptor = [8, -4, 10]  # 8 entries, first mapped value -4, 10 bits
    lut = [0, 100, 200, 300, 400, 600, 800, 1023]
    item.LUTData = lut
    ds = _synthetic(values, VOILUTSequence=[item])
    expected_index = np.clip(values.astype(int) + 4, 0, 7)
    expected = np.array(lut)[expected_index] / 1023
    np.testing.assert_allclose(apply_voi_lut_sequence(values, ds), expected)
    got = decode_png(render_instance(ds)).astype(float)
    np.testing.assert_array_equal(got, np.floor(expected * 255 + 0.5))


def test_enhanced_ct_per_frame_rescale_and_window(shared_data) -> None:
    path = shared_data / "multiframe" / "eCT_Supplemental.dcm"
    ds = pydicom.dcmread(path)
    for frame in range(int(ds.NumberOfFrames)):
        group = ds.PerFrameFunctionalGroupsSequence[frame]
        pvt = group.get("PixelValueTransformationSequence") or ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence
        voi = group.get("FrameVOILUTSequence") or ds.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence
        slope, intercept = float(pvt[0].RescaleSlope), float(pvt[0].RescaleIntercept)
        raw = ds.pixel_array[frame].astype(float)
        np.testing.assert_allclose(frame_values(path, frame), raw * slope + intercept)
        assert modality_transform(ds, frame).intercept == intercept
        got = decode_png(render_instance(path, frame=frame))
        ref = linear_window(raw * slope + intercept, float(voi[0].WindowCenter), float(voi[0].WindowWidth))
        assert np.abs(got - ref).max() <= 0.5 + 1e-9


# ------------------------------------------------------------------ shared data: HU, presets, MONOCHROME1, colour
def test_philips_hu_at_known_pixels(shared_data) -> None:
    path = shared_data / "ct" / "philips_head_phantom_5mm" / "IM0010.dcm"
    ds = pydicom.dcmread(path)
    values = frame_values(path)
    for r, c in [(0, 0), (256, 256), (200, 300), (511, 100)]:
        assert values[r, c] == pytest.approx(int(ds.pixel_array[r, c]) * float(ds.RescaleSlope) + float(ds.RescaleIntercept))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_render_their_window(shared_data, name: str) -> None:
    path = shared_data / "ct" / "philips_head_phantom_5mm" / "IM0010.dcm"
    got = decode_png(render_instance(path, preset=name))
    assert np.abs(got - linear_window(hu(pydicom.dcmread(path)), *PRESETS[name])).max() <= 0.5 + 1e-9


def test_preset_names_cover_the_usual_windows() -> None:
    assert {"brain", "subdural", "stroke", "temporal-bone", "lung", "mediastinum", "abdomen", "liver", "bone",
            "soft-tissue"} <= set(PRESETS)
    with pytest.raises(ValueError, match="unknown preset"):
        render_instance(get_testdata_file("CT_small.dcm"), preset="nope")


@pytest.mark.parametrize("name", ["CR_dicomdir_6154.dcm", "dx_image.dcm", "RG1_J2KI.dcm", "CR-MONO1-10-chest.dcm"])
def test_monochrome1_is_inverted(shared_data, name: str) -> None:
    path = shared_data / "cr" / name
    ds = pydicom.dcmread(path, force=True)
    if "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    got = decode_png(render_instance(path)).astype(float)
    ref = 255.0 - linear_window(hu(ds), *(float(v) for v in (ds.WindowCenter, ds.WindowWidth)))
    assert np.mean(np.abs(got - ref) <= 1) > 0.999


def test_mr_without_window_gets_a_data_window(shared_data) -> None:
    path = shared_data / "mr" / "emri_small.dcm"
    got = decode_png(render_instance(path))
    assert got.min() == 0 and got.max() == 255


@pytest.mark.parametrize("rel", ["colour/SC_rgb.dcm", "colour/SC_ybr_full_422_uncompressed.dcm",
                                 "compressed/SC_rgb_jpeg_dcmtk.dcm", "compressed/SC_rgb_rle.dcm",
                                 "us/US1_UNCR.dcm", "edge/ExplVR_BigEnd.dcm", "compressed/HTJ2K_08_RGB.dcm"])
def test_colour_equals_reference_decode(shared_data, rel: str) -> None:
    ds = pydicom.dcmread(shared_data / rel)
    ref = pixel_array(shared_data / rel, raw=True)  # decoded samples, no colour conversion
    if ds.PhotometricInterpretation.startswith("YBR"):
        ref = convert_color_space(ref, ds.PhotometricInterpretation, "RGB")
    np.testing.assert_array_equal(decode_png(render_instance(shared_data / rel)), ref)


@pytest.mark.parametrize("rel", ["colour/OT-PAL-8-face.dcm", "colour/examples_palette.dcm", "us/gdcm-US-ALOKA-16.dcm"])
def test_palette_colour_equals_reference_lut(shared_data, rel: str) -> None:
    ds = pydicom.dcmread(shared_data / rel, force=True)
    if "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    expected = (apply_color_lut(ds.pixel_array, ds).astype(np.uint32) >> (bits - 8)).astype(np.uint8)
    np.testing.assert_array_equal(decode_png(render_instance(shared_data / rel)), expected)


def test_overlay_burned_in_only_when_asked(shared_data) -> None:
    path = shared_data / "mr" / "MR-SIEMENS-DICOM-WithOverlays.dcm"
    ds = pydicom.dcmread(path)
    mask = ds.overlay_array(0x6000).astype(bool)
    plain = decode_png(render_instance(path))
    burnt = decode_png(render_instance(path, overlays=True))
    assert (burnt[mask] == 255).all()
    np.testing.assert_array_equal(burnt[~mask], plain[~mask])


def test_annotate_and_max_size(shared_data) -> None:
    path = shared_data / "ct" / "philips_head_phantom_5mm" / "IM0010.dcm"
    image = decode_png(render_instance(path, annotate=True, max_size=256))
    assert image.shape == (256, 256, 3)
    jpeg = render_instance(path, fmt="jpeg")
    assert jpeg[:2] == b"\xff\xd8"


def test_png_writer_round_trips() -> None:
    rng = np.random.default_rng(0)
    for shape in [(7, 5), (33, 17, 3)]:
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_array_equal(decode_png(encode_png(pixels)), pixels)


def test_no_pixel_data_is_a_clear_error(shared_data) -> None:
    path = shared_data / "other" / "test-SR.dcm"
    with pytest.raises(InvalidDataset, match=r"test-SR\.dcm: no pixel data"):
        render_instance(path)
