"""Roles and what each may do (issue 12). One role per user; a permission is a kind of act on the data, and
every HTTP route needs exactly one (``web.auth.ROUTE_PERMISSIONS``). The table is the documentation: README
"Users and roles" renders the same sets.

- ``read``: search and view every study (REST, DICOMweb QIDO-RS / WADO-RS, the viewer's data).
- ``export``: take data out as files (DICOM downloads, zips, de-identified copies).
- ``store``: bring data in (STOW-RS, uploads).
- ``send``: push studies to a configured DICOM node, and see the nodes to choose from.
- ``delete``: remove patients, studies, series, instances.
- ``worklist``: see the modality worklist, its query log and MPPS; ``worklist_edit``: create, change, cancel
  and delete its items.
- ``admin``: users, tokens, nodes and their permissions, the quarantine, the audit trail, the
  de-identification mappings, the API documentation of every route.
"""

from __future__ import annotations

READ, EXPORT, STORE, SEND, DELETE = "read", "export", "store", "send", "delete"
WORKLIST, WORKLIST_EDIT, ADMIN = "worklist", "worklist_edit", "admin"
PERMISSIONS = (READ, EXPORT, STORE, SEND, DELETE, WORKLIST, WORKLIST_EDIT, ADMIN)

ROLES: dict[str, frozenset[str]] = {
    "admin": frozenset(PERMISSIONS),
    # physicians and physicists read every study and export; they see the worklist, they do not schedule
    "physician": frozenset({READ, EXPORT, WORKLIST}),
    "physicist": frozenset({READ, EXPORT, WORKLIST}),
    # technologists run the modalities: store, send, the worklist and its MPPS
    "technologist": frozenset({READ, STORE, SEND, WORKLIST, WORKLIST_EDIT}),
    "scheduler": frozenset({WORKLIST, WORKLIST_EDIT}),
    "viewer": frozenset({READ}),
}


def permissions_of(role: str) -> frozenset[str]:
    """The permissions of ``role``; an unknown role (a row written by a newer version) has none."""
    return ROLES.get(role, frozenset())
