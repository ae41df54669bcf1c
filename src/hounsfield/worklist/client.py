"""hounsfield as an MWL SCU: query any remote Modality Worklist SCP (``hounsfield worklist find``)."""

from __future__ import annotations

from typing import Iterator

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind

from hounsfield.config import Peer
from hounsfield.dimse import status as st
from hounsfield.dimse.client import associate
from hounsfield.errors import Rejected
from hounsfield.tls import Outgoing


def find(peer: Peer, identifier: Dataset, calling_ae: str, outgoing: Outgoing | None = None) -> Iterator[Dataset]:
    """The answers of a remote MWL SCP (over TLS to a node flagged ``tls``, ``outgoing`` saying how);
    ``Rejected`` when the association or the C-FIND fails."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = associate(ae, peer, outgoing)  # as the server: PDUs read whole (unless the fast paths are off)
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
