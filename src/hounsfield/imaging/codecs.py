"""Decoders for transfer syntaxes that pydicom 3.0 does not handle itself (with permissive codecs).

12-bit JPEG Extended (1.2.840.10008.1.2.4.51, PS3.5 A.4.1): GDCM and Pillow decode 8-bit JPEG only and
pylibjpeg-libjpeg is GPL; imagecodecs (BSD) bundles libjpeg-turbo 3, which decodes 12-bit DCT JPEG.

Deflated Image Frame Compression (1.2.840.10008.1.2.8.1, PS3.5 A.4.11, added in 2023): each frame is
encapsulated (PS3.5 A.4) and its fragment is the frame's native pixel bytes compressed with Deflate
(RFC 1951, no zlib header). Decoding needs only :mod:`zlib`.
"""

from __future__ import annotations

import zlib

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import get_decoder
from pydicom.uid import UID, ExplicitVRLittleEndian

DEFLATED_IMAGE_FRAME = UID("1.2.840.10008.1.2.8.1")


def _frame_fragment(ds: Dataset, frame: int) -> bytes:
    frames = int(ds.get("NumberOfFrames") or 1)
    for index, fragment in enumerate(generate_frames(ds.PixelData, number_of_frames=frames)):
        if index == frame:
            return fragment
    raise ValueError(f"frame {frame} is missing from the encapsulated pixel data")


def decode_jpeg12_frame(ds: Dataset, frame: int) -> np.ndarray:
    """Decode frame ``frame`` of a 12-bit JPEG Extended instance; signed data (PixelRepresentation 1) is
    sign-extended from BitsStored, as JPEG samples are unsigned bit patterns."""
    import imagecodecs

    arr = imagecodecs.jpeg8_decode(_frame_fragment(ds, frame))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        shift = 16 - int(ds.get("BitsStored") or 12)
        arr = (arr.astype(np.int16) << shift) >> shift
    return arr


def decode_deflated_frames(ds: Dataset, frame: int) -> np.ndarray:
    """Inflate frame ``frame`` of a Deflated Image Frame Compression instance and decode it as native data."""
    native = zlib.decompress(_frame_fragment(ds, frame), wbits=-zlib.MAX_WBITS)
    arr, _ = get_decoder(ExplicitVRLittleEndian).as_array(
        native,
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        samples_per_pixel=int(ds.get("SamplesPerPixel", 1)),
        bits_allocated=int(ds.BitsAllocated),
        bits_stored=int(ds.get("BitsStored", ds.BitsAllocated)),
        pixel_representation=int(ds.get("PixelRepresentation", 0)),
        photometric_interpretation=str(ds.get("PhotometricInterpretation", "MONOCHROME2")),
        planar_configuration=int(ds.get("PlanarConfiguration", 0)),
        number_of_frames=1,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        pixel_keyword="PixelData",
    )
    return arr
