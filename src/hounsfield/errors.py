"""Protocol-neutral exceptions raised by the domain layer.

Adapters translate them: the DIMSE handlers through ``dimse.status``, the web service through the one
exception handler in ``web.app``. Each carries a message meant for a person.
"""

from __future__ import annotations


class HounsfieldError(Exception):
    """Base class for every error the domain layer raises on purpose."""


class NotFound(HounsfieldError):
    """The thing asked for does not exist (an unknown UID, AE title, item…)."""


class InvalidQuery(HounsfieldError):
    """A query identifier or filter that breaks the matching rules or names no known level/attribute."""


class InvalidDataset(HounsfieldError):
    """A dataset that cannot be stored: unreadable, truncated, or without a required UID."""


class Rejected(HounsfieldError):
    """The request is understood but refused by policy (duplicate kept, unknown AE…)."""


class RefusedByPolicy(Rejected):
    """Refused by a site's own rule (a plugin's filter, issue 14), with the protocol status it chose: a DICOM
    status for C-STORE (``dicom_status``; None: the adapter's status for ``Rejected``)."""

    def __init__(self, message: str, dicom_status: int | None = None) -> None:
        super().__init__(message)
        self.dicom_status = dicom_status


class NotAuthorized(HounsfieldError):
    """The caller may not do this (a DICOM node's permissions: ``access``)."""


class Conflict(HounsfieldError):
    """The request clashes with the current state (e.g. a status transition that is not allowed)."""


class StorageFull(HounsfieldError):
    """The file store could not write (disk full, permission denied)."""


class DependencyMissing(HounsfieldError):
    """An optional feature needs a package that is not installed."""


class RemoteFailure(HounsfieldError):
    """A remote DICOM node asked for something did not answer, refused the association, or answered with a
    failure status (``remote``): not the caller's mistake nor ours, a bad gateway."""
