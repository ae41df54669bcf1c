"""HL7 v2 orders and patient updates into the worklist (issue 14): an MLLP listener in ``serve``.

Modules: ``mllp`` (the framing of HL7 v2.5.1 Appendix C and the listener thread), ``message`` (a frame read as
an HL7 message with python-hl7: header, character set, the limits of hostile input, ``Hl7Error``), ``ack``
(the original-mode acknowledgment, HL7 v2.5.1 2.9.2 and 2.15.1), ``mapping`` (segments to worklist attributes,
IHE RAD TF-2 4.4 / RAD-4 and the dcm4chee-arc HL7 conformance statement), ``service`` (a message applied to the
worklist in one transaction, logged and audited; replay), ``models`` and ``log`` (the message log), ``cli``.
"""
