"""Named DIMSE status codes (PS3.4 and PS3.7 Annex C) and the one table from domain outcomes to them."""

from __future__ import annotations

from hounsfield.errors import (
    HounsfieldError,
    InvalidDataset,
    InvalidQuery,
    NotFound,
    Rejected,
    StorageFull,
)

SUCCESS = 0x0000
PENDING = 0xFF00
PENDING_WARNING = 0xFF01  # optional keys not supported
PENDING_STATUSES = (PENDING, PENDING_WARNING)
CANCEL = 0xFE00
SUBOPS_WARNING = 0xB000  # one or more C-STORE sub-operations failed
# Storage (PS3.4 B.2.3)
STORE_OUT_OF_RESOURCES = 0xA700
STORE_DATASET_MISMATCH = 0xA900
STORE_CANNOT_UNDERSTAND = 0xC000
STORE_UNEXPECTED_FAILURE = 0xC211  # what pynetdicom answers when a C-STORE handler raises
STORE_COERCION = 0xB000  # warnings: data elements coerced,
STORE_ELEMENTS_DISCARDED = 0xB006  # elements discarded,
STORE_DATASET_MISMATCH_WARNING = 0xB007  # data set does not match the SOP class
STORE_STORED = frozenset({SUCCESS, STORE_COERCION, STORE_ELEMENTS_DISCARDED, STORE_DATASET_MISMATCH_WARNING})
# Query/Retrieve (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4)
IDENTIFIER_MISMATCH = 0xA900
FIND_UNABLE_TO_PROCESS = 0xC000
MOVE_DESTINATION_UNKNOWN = 0xA801
MOVE_OUT_OF_RESOURCES_SUBOPS = 0xA702
RETRIEVE_UNABLE_TO_PROCESS = 0xC000
# DIMSE-N (PS3.7 C.5)
NO_SUCH_OBJECT_INSTANCE = 0x0112
INVALID_ATTRIBUTE_VALUE = 0x0106
MISSING_ATTRIBUTE = 0x0120
PROCESSING_FAILURE = 0x0110
INVALID_OBJECT_INSTANCE = 0x0117
DUPLICATE_SOP_INSTANCE = 0x0111

# A-ASSOCIATE-RJ (PS3.8 9.3.4): result, source, reason
REJECTED_PERMANENT = 0x01
REJECT_SOURCE_USER = 0x01
CALLING_AE_NOT_RECOGNIZED = 0x03


STORE_ERROR_STATUS: dict[type[HounsfieldError], int] = {
    InvalidDataset: STORE_CANNOT_UNDERSTAND,
    StorageFull: STORE_OUT_OF_RESOURCES,
    Rejected: STORE_DATASET_MISMATCH,
}

FIND_ERROR_STATUS: dict[type[HounsfieldError], int] = {
    InvalidQuery: IDENTIFIER_MISMATCH,
    NotFound: FIND_UNABLE_TO_PROCESS,
}


def status_for(error: HounsfieldError, table: dict[type[HounsfieldError], int], default: int) -> int:
    for kind, status in table.items():
        if isinstance(error, kind):
            return status
    return default
