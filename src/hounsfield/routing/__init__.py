"""Routing rules (issue 14): instances forwarded to remote nodes without writing code. ``rules`` reads and
matches a rule, ``models`` and ``store`` keep the rules added through REST and the persistent delivery queue,
``worker`` turns what the index gains into deliveries and sends them, retrying with back-off."""
