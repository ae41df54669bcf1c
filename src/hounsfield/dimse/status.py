"""Named DIMSE status codes (PS3.4 and PS3.7 Annex C) and the one table from domain outcomes to them."""

from __future__ import annotations

from hounsfield.errors import (
    HounsfieldError,
    InvalidDataset,
    InvalidQuery,
    NotAuthorized,
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

NOT_AUTHORIZED = 0x0124  # Refused: Not Authorised (PS3.7 Annex C, a general status), any DIMSE service

# A-ASSOCIATE-RJ (PS3.8 9.3.4): result, source, reason
REJECTED_PERMANENT = 0x01
REJECT_SOURCE_USER = 0x01
CALLING_AE_NOT_RECOGNIZED = 0x03
CALLED_AE_NOT_RECOGNIZED = 0x07


STORE_ERROR_STATUS: dict[type[HounsfieldError], int] = {
    NotAuthorized: NOT_AUTHORIZED,
    InvalidDataset: STORE_CANNOT_UNDERSTAND,
    StorageFull: STORE_OUT_OF_RESOURCES,
    Rejected: STORE_DATASET_MISMATCH,
}

FIND_ERROR_STATUS: dict[type[HounsfieldError], int] = {
    NotAuthorized: NOT_AUTHORIZED,
    InvalidQuery: IDENTIFIER_MISMATCH,
    NotFound: FIND_UNABLE_TO_PROCESS,
}


def status_for(error: HounsfieldError, table: dict[type[HounsfieldError], int], default: int) -> int:
    for kind, status in table.items():
        if isinstance(error, kind):
            return status
    return default


# ---- what a status means, for people (the client commands print it beside the code) -----------------------
# One table per DIMSE service: codes or ranges of codes → meaning, as PS3.4 and PS3.7 name them. A code missing
# from its service's table is looked up in GENERAL (PS3.7 C), then named by its category (PS3.7 C.1).
Meanings = dict[int | range, str]

GENERAL: Meanings = {  # PS3.7 Annex C, statuses any service may answer
    SUCCESS: "Success",
    CANCEL: "Canceled",
    0x0122: "Refused: SOP Class not supported",
    0x0124: "Refused: not authorized",
    0x0210: "Duplicate invocation",
    0x0211: "Unrecognized operation",
    0x0212: "Mistyped argument",
    0x0213: "Resource limitation",
}

ECHO: Meanings = {SUCCESS: "Success"}  # Verification, PS3.4 A.4 and PS3.7 9.1.5.1.4

STORE: Meanings = {  # Storage, PS3.4 B.2.3
    SUCCESS: "Success",
    range(0xA700, 0xA800): "Refused: out of resources",
    range(0xA900, 0xAA00): "Error: data set does not match SOP Class",
    range(0xC000, 0xD000): "Error: cannot understand",
    STORE_COERCION: "Warning: coercion of data elements",
    STORE_ELEMENTS_DISCARDED: "Warning: elements discarded",
    STORE_DATASET_MISMATCH_WARNING: "Warning: data set does not match SOP Class",
}

FIND: Meanings = {  # Query/Retrieve and Modality Worklist C-FIND, PS3.4 C.4.1.1.4 and K.4.1.1.4
    SUCCESS: "Success: matching is complete",
    PENDING: "Pending: matches are continuing",
    PENDING_WARNING: "Pending: matches are continuing, one or more optional keys were not supported",
    CANCEL: "Canceled: matching terminated by a cancel request",
    0xA700: "Refused: out of resources",
    IDENTIFIER_MISMATCH: "Error: identifier does not match SOP Class",
    range(0xC000, 0xD000): "Failed: unable to process",
}

_RETRIEVE: Meanings = {  # what C-MOVE and C-GET share, PS3.4 C.4.2.1.5 and C.4.3.1.4
    SUCCESS: "Success: sub-operations complete, no failures",
    PENDING: "Pending: sub-operations are continuing",
    CANCEL: "Canceled: sub-operations terminated by a cancel request",
    SUBOPS_WARNING: "Warning: sub-operations complete, one or more failures or warnings",
    0xA701: "Refused: out of resources, unable to calculate the number of matches",
    MOVE_OUT_OF_RESOURCES_SUBOPS: "Refused: out of resources, unable to perform sub-operations",
    IDENTIFIER_MISMATCH: "Error: identifier does not match SOP Class",
    range(0xC000, 0xD000): "Failed: unable to process",
}

MOVE: Meanings = {**_RETRIEVE, MOVE_DESTINATION_UNKNOWN: "Refused: move destination unknown to the called node"}
GET: Meanings = dict(_RETRIEVE)

MEANINGS: dict[str, Meanings] = {"C-ECHO": ECHO, "C-STORE": STORE, "C-FIND": FIND, "C-MOVE": MOVE, "C-GET": GET}


def _look_up(table: Meanings, status: int) -> str | None:
    if status in table:
        return table[status]
    for key, text in table.items():
        if isinstance(key, range) and status in key:
            return text
    return None


def meaning(service: str, status: int) -> str:
    """What ``status`` means as an answer to ``service`` ("C-ECHO", "C-STORE", "C-FIND", "C-MOVE", "C-GET")."""
    found = _look_up(MEANINGS[service], status) or _look_up(GENERAL, status)
    if found:
        return found
    if status in PENDING_STATUSES:
        return "Pending"
    if status == 0x0001 or status >> 12 == 0xB:
        return f"Warning, a status {service} does not define"
    return f"Failure, a status {service} does not define"


def describe(service: str, status: int) -> str:
    """``0xA801 (Refused: move destination unknown …)``: the code and its meaning, for one line of output."""
    return f"0x{status:04X} ({meaning(service, status)})"
