"""File system paths out of what clients read: where the server keeps its files is none of theirs (an error
message of the app's handlers, or of a route that words its own answer)."""

from __future__ import annotations

import re
from pathlib import Path


def path_scrubber(data_dir: Path) -> re.Pattern[str]:
    """Paths under the data directory (as configured and resolved), to be cut to their file name in error
    bodies: any client reads those, and where the server keeps its files is none of theirs."""
    roots = sorted({str(data_dir), str(data_dir.resolve())} - {"."}, key=len, reverse=True)
    return re.compile(f"(?:{'|'.join(map(re.escape, roots))})[^\\s:'\"]*")


# Any other absolute path of two components or more (a files directory on another volume behind a symlink, a
# temporary file, a codec's own file): it starts a word, so "application/dicom" or "1/2" are no paths.
ABSOLUTE_PATH = re.compile(r"(?<![\w.~/:-])/(?:[^\s/:'\"()\[\]]+/)+[^\s/:'\"()\[\],;]*")


def public_detail(text: str, internal_paths: re.Pattern[str]) -> str:
    """An error message fit for any client: every file system path in it cut to its last component."""
    text = internal_paths.sub(lambda m: Path(m.group()).name, text)
    return ABSOLUTE_PATH.sub(lambda m: Path(m.group()).name, text)
