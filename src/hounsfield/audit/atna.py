"""The DICOM Audit Message of an audit event (PS3.15 A.5, the message IHE ATNA forwards).

An ``AuditMessage`` (schema: PS3.15 A.5.1) holds, in this order: ``EventIdentification`` (what: EventID from
CID 400, EventTypeCode from CID 401, EventActionCode, EventDateTime, EventOutcomeIndicator and the event's detail
as EventOutcomeDescription), ``ActiveParticipant`` (who: the user or the calling AE title with its address, and
this server), ``AuditSourceIdentification`` (this server, an application server process: type 4) and one
``ParticipantObjectIdentification`` each for the patient, the study and a query (which data). Coded values are
``csd-code`` / ``codeSystemName`` / ``originalText`` attributes (A.5.1.1).

Events map to the messages of A.5.3 as ``EVENTS`` says: stored, retrieved and sent instances are DICOM Instances
Transferred (A.5.3.4), C-FIND, QIDO-RS and MWL queries Query (A.5.3.10), worklist items, MPPS and HL7 orders and
patient updates Procedure Record (A.5.3.9; IHE RAD TF-3 5.1 for RAD-4), logins User Authentication (A.5.3.13),
user and permission changes and refusals Security Alert (A.5.3.11). Outcomes map to the EventOutcomeIndicator as
``OUTCOME_INDICATOR`` says (A.5.1: 0 success, 4 minor failure — a failure the requestor may retry —, 8 serious
failure — the action was refused).
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import timezone
from ipaddress import ip_address
from typing import Any

from hounsfield.audit import actions as a


@dataclass(frozen=True)
class Code:
    """A coded value (PS3.15 A.5.1.1 CodedValueType)."""

    code: str
    scheme: str
    meaning: str


def _dcm(code: str, meaning: str) -> Code:
    return Code(code, "DCM", meaning)


# CID 400 Audit Event ID, CID 401 Audit Event Type Code (PS3.16)
INSTANCES_ACCESSED = _dcm("110103", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED = _dcm("110104", "DICOM Instances Transferred")
STUDY_DELETED = _dcm("110105", "DICOM Study Deleted")
EXPORT = _dcm("110106", "Export")
PROCEDURE_RECORD = _dcm("110111", "Procedure Record")
QUERY = _dcm("110112", "Query")
SECURITY_ALERT = _dcm("110113", "Security Alert")
USER_AUTHENTICATION = _dcm("110114", "User Authentication")
LOGIN = _dcm("110122", "Login")
LOGOUT = _dcm("110123", "Logout")
RESTRICTED_FUNCTION = _dcm("110132", "Use of Restricted Function")
SECURITY_ROLES_CHANGED = _dcm("110136", "Security Roles Changed")
USER_SECURITY_CHANGED = _dcm("110137", "User Security Attributes Changed")
# CID 402 Audit Active Participant Role ID Code
DESTINATION = _dcm("110152", "Destination Role ID")
SOURCE = _dcm("110153", "Source Role ID")
# Participant Object ID Type Codes (A.5.1.2.4 and CID 404)
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
SEARCH_CRITERIA = Code("10", "RFC-3881", "Search Criteria")
STUDY_INSTANCE_UID = _dcm("110180", "Study Instance UID")
SOP_CLASS_UID = _dcm("110181", "SOP Class UID")
MWL_FIND = "1.2.840.10008.5.1.4.31"  # Modality Worklist Information Model - FIND (PS3.4 K.6.1)


@dataclass(frozen=True)
class Kind:
    """How one action is told: EventID, EventActionCode (C R U D E), EventTypeCode, and the roles (RoleIDCode)
    of the requestor and of this server when the event moves data between them."""

    event_id: Code
    action_code: str
    type_code: Code | None = None
    requestor_role: Code | None = None
    server_role: Code | None = None


EVENTS: dict[str, Kind] = {
    a.LOGIN: Kind(USER_AUTHENTICATION, "E", LOGIN),
    a.LOGOUT: Kind(USER_AUTHENTICATION, "E", LOGOUT),
    a.LOGIN_FAILED: Kind(USER_AUTHENTICATION, "E", LOGIN),
    a.STUDY_VIEWED: Kind(INSTANCES_ACCESSED, "R"),
    a.STUDY_DOWNLOADED: Kind(EXPORT, "R", server_role=SOURCE),
    a.STUDY_EXPORTED: Kind(EXPORT, "R", server_role=SOURCE),
    a.STUDY_SENT: Kind(INSTANCES_TRANSFERRED, "R", server_role=SOURCE),
    a.STUDY_DELETED: Kind(STUDY_DELETED, "D"),
    a.DEIDENTIFIED: Kind(INSTANCES_ACCESSED, "C"),
    a.INSTANCES_STORED: Kind(INSTANCES_TRANSFERRED, "C", requestor_role=SOURCE, server_role=DESTINATION),
    a.QUERY_ANSWERED: Kind(QUERY, "E", requestor_role=SOURCE, server_role=DESTINATION),
    a.RETRIEVE_ANSWERED: Kind(INSTANCES_TRANSFERRED, "R", server_role=SOURCE),
    a.WORKLIST_ITEM_CREATED: Kind(PROCEDURE_RECORD, "C"),
    a.WORKLIST_ITEM_CHANGED: Kind(PROCEDURE_RECORD, "U"),
    a.WORKLIST_ITEM_CANCELLED: Kind(PROCEDURE_RECORD, "U"),
    a.WORKLIST_ITEM_DELETED: Kind(PROCEDURE_RECORD, "D"),
    a.WORKLIST_QUERIED: Kind(QUERY, "E", requestor_role=SOURCE, server_role=DESTINATION),
    a.MPPS_RECEIVED: Kind(PROCEDURE_RECORD, "U"),
    a.HL7_MESSAGE_RECEIVED: Kind(PROCEDURE_RECORD, "E", requestor_role=SOURCE, server_role=DESTINATION),
    a.USER_CHANGED: Kind(SECURITY_ALERT, "E", USER_SECURITY_CHANGED),
    a.PERMISSION_CHANGED: Kind(SECURITY_ALERT, "E", SECURITY_ROLES_CHANGED),
    a.ACCESS_REFUSED: Kind(SECURITY_ALERT, "E", RESTRICTED_FUNCTION),
}
OUTCOME_INDICATOR = {a.SUCCESS: "0", a.WARNING: "4", a.FAILURE: "4", a.REFUSED: "8"}
APPLICATION_SERVER = "4"  # Audit Source Type Code (A.5.1.2.1)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")  # not characters of XML 1.0


def _text(value: Any) -> str:
    """A value fit for XML (a hostile AE title or name may hold control characters)."""
    return _NOT_XML.sub("\ufffd", str(value))


def _coded(parent: ET.Element, tag: str, code: Code) -> None:
    ET.SubElement(parent, tag, {"csd-code": code.code, "codeSystemName": code.scheme, "originalText": code.meaning})


def _participant(root: ET.Element, user_id: str, *, requestor: bool, ae_title: str = "", address: str = "",
                 role: Code | None = None) -> None:
    attrs = {"UserID": _text(user_id), "UserIsRequestor": "true" if requestor else "false"}
    if ae_title:
        attrs["AlternativeUserID"] = _text(f"AETITLES={ae_title}")  # PS3.15 A.5.2.1
    if address:
        attrs["NetworkAccessPointID"] = _text(address)
        attrs["NetworkAccessPointTypeCode"] = "2" if _is_ip(address) else "1"  # IP address, machine name
    node = ET.SubElement(root, "ActiveParticipant", attrs)
    if role is not None:
        _coded(node, "RoleIDCode", role)


def _is_ip(address: str) -> bool:
    try:
        ip_address(address)
    except ValueError:
        return False
    return True


def _object(root: ET.Element, object_id: str, type_code: str, role: str, id_type: Code, *, name: str | None = None,
            query: str | None = None) -> None:
    node = ET.SubElement(root, "ParticipantObjectIdentification", {
        "ParticipantObjectID": _text(object_id), "ParticipantObjectTypeCode": type_code,
        "ParticipantObjectTypeCodeRole": role})
    _coded(node, "ParticipantObjectIDTypeCode", id_type)
    if name is not None:
        ET.SubElement(node, "ParticipantObjectName").text = _text(name)
    if query is not None:
        ET.SubElement(node, "ParticipantObjectQuery").text = base64.b64encode(
            query.encode("utf-8", "replace")).decode("ascii")


def audit_message(event: dict[str, Any], *, ae_title: str, host: str) -> bytes:
    """The UTF-8 XML of the DICOM Audit Message of ``event`` (the values of an audit row), as reported by this
    server: the AE title ``ae_title`` on the machine ``host``."""
    kind = EVENTS.get(event["action"], Kind(SECURITY_ALERT, "E"))
    at = event["at"]
    at = at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)
    root = ET.Element("AuditMessage")
    ident = ET.SubElement(root, "EventIdentification", {
        "EventActionCode": kind.action_code, "EventDateTime": at.isoformat(timespec="microseconds"),
        "EventOutcomeIndicator": OUTCOME_INDICATOR.get(event["outcome"], "8")})
    _coded(ident, "EventID", kind.event_id)
    if kind.type_code is not None:
        _coded(ident, "EventTypeCode", kind.type_code)
    if event["detail"]:
        ET.SubElement(ident, "EventOutcomeDescription").text = _text(event["detail"])
    requestor = event["user"] or event["ae_title"]
    if requestor or event["address"]:
        _participant(root, requestor, requestor=True, ae_title=event["ae_title"], address=event["address"],
                     role=kind.requestor_role)
    _participant(root, ae_title, requestor=not (requestor or event["address"]), ae_title=ae_title, address=host,
                 role=kind.server_role)
    source = ET.SubElement(root, "AuditSourceIdentification", {"AuditSourceID": _text(ae_title)})
    ET.SubElement(source, "AuditSourceTypeCode", {"csd-code": APPLICATION_SERVER})
    if event["patient_id"]:
        _object(root, event["patient_id"], "1", "1", PATIENT_NUMBER, name=event["patient_name"])  # Person, Patient
    if event["study_instance_uid"]:
        _object(root, event["study_instance_uid"], "2", "3", STUDY_INSTANCE_UID)  # System Object, Report
    if kind.event_id == QUERY:  # System Object, Query
        mwl = event["action"] == a.WORKLIST_QUERIED
        _object(root, MWL_FIND if mwl else "query", "2", "24", SOP_CLASS_UID if mwl else SEARCH_CRITERIA,
                query=event["detail"] or "(universal)")
    return b'<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(root, encoding="utf-8", xml_declaration=False)
