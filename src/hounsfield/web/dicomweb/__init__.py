"""DICOMweb (PS3.18) at ``/dicom-web``, one module per service: ``qido`` (Search Transaction, 10.6), ``wado``
and ``rendered`` (Retrieve Transaction, 10.4), ``stow`` (Store Transaction, 10.5); ``cors`` opens the root
to browser clients on other origins, ``common`` holds what they share.

The routes are thin: query parameters become a ``query.Query`` identifier, retrieval goes through
``Archive.instances`` and the query layer, storage through ``Archive.store_file``, decoding and rendering
through ``hounsfield.imaging``.
"""

from __future__ import annotations

from fastapi import APIRouter

from hounsfield.web.dicomweb import qido, rendered, stow, wado
from hounsfield.web.dicomweb.common import PREFIX, pacs_of
from hounsfield.web.dicomweb.cors import DicomWebCORS

router = APIRouter(prefix=PREFIX, tags=["dicomweb"])
for service in (qido, wado, rendered, stow):
    router.include_router(service.router)

__all__ = ["DicomWebCORS", "pacs_of", "router"]
