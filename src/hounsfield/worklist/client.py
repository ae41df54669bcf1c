"""hounsfield as an MWL SCU: query any remote Modality Worklist SCP (``hounsfield worklist find``)."""

from __future__ import annotations

from typing import Iterator

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind

from hounsfield.config import Peer
from hounsfield.dimse import fastpath
from hounsfield.dimse import status as st
from hounsfield.dimse.handlers import socket_tuning
from hounsfield.errors import Rejected


def find(peer: Peer, identifier: Dataset, calling_ae: str) -> Iterator[Dataset]:
    """The answers of a remote MWL SCP; ``Rejected`` when the association or the C-FIND fails."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(ModalityWorklistInformationFind)
    fastpath.install()  # as the server: PDUs read whole and acknowledged at once (unless turned off first)
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, evt_handlers=socket_tuning())
    if not assoc.is_established:
        raise Rejected(f"association with {peer.ae_title} at {peer.host}:{peer.port} was not established")
    try:
        for status, ds in assoc.send_c_find(identifier, ModalityWorklistInformationFind):
            if not status:
                raise Rejected(f"{peer.ae_title} did not answer the MWL C-FIND")
            if status.Status in (st.PENDING, st.PENDING_WARNING) and ds is not None:
                yield ds
            elif status.Status != st.SUCCESS:
                raise Rejected(f"MWL C-FIND refused by {peer.ae_title} with status 0x{status.Status:04X}")
    finally:
        assoc.release()
