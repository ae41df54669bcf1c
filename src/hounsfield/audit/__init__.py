"""The audit trail (issue 12): who did what to which patient's data, recorded and optionally forwarded.

Modules: ``models`` (the append-only table), ``actions`` (what an event can be and how it ended; the
``Recorder`` the services are given), ``trail`` (``AuditTrail``: record without waiting, search), ``keys`` (the
patient and study a received DICOM dataset names), ``atna`` (an event as a PS3.15 A.5 DICOM Audit Message),
``syslog`` (those messages to a collector: RFC 5424 over TCP or TLS), ``cli`` (``hounsfield audit``)."""
