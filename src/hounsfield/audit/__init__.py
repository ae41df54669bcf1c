"""The audit trail (issue 12): who did what to which patient's data, recorded and optionally forwarded."""
