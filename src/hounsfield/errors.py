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


class NotAuthorized(HounsfieldError):
    """The caller may not do this (a DICOM node's permissions: ``access``)."""


class Conflict(HounsfieldError):
    """The request clashes with the current state (e.g. a status transition that is not allowed)."""


class StorageFull(HounsfieldError):
    """The file store could not write (disk full, permission denied)."""


class DependencyMissing(HounsfieldError):
    """An optional feature needs a package that is not installed."""
