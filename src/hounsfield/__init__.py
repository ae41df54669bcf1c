"""hounsfield: a small, fast PACS."""

__version__ = "0.1.0"
