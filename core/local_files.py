"""Reading a file named on this machine (``phobos ingest PATH``, the console's ``/upload PATH``), bounded.

The size is checked on the stream, not after: at most ``max_bytes + 1`` bytes are ever read, so
``/dev/zero``, a FIFO that never ends or a 200 MB text file is refused after reading just past the limit,
not after filling memory. Every way the path can be wrong gives one sentence (:class:`DocumentError`).
"""

from __future__ import annotations

from pathlib import Path

from core.pdf import DocumentError
from core.text_safety import escape_name


def read_local_file(path: Path, max_bytes: int) -> bytes:
    """The bytes at ``path``, or :class:`DocumentError` saying why not (missing, a directory, unreadable, too big)."""
    shown = escape_name(str(path))
    if path.is_dir():
        raise DocumentError(f"{shown} is a directory; name the files in it instead (for example {shown}/*.pdf).")
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)  # CPython reads a regular file in one go, a stream in pieces
    except FileNotFoundError:
        raise DocumentError(f"There is no file at {shown}.") from None
    except PermissionError:
        raise DocumentError(f"{shown} cannot be read here (permission denied).") from None
    except IsADirectoryError:  # made a directory since the check above
        raise DocumentError(f"{shown} is a directory; name the files in it instead.") from None
    except OSError as exc:
        raise DocumentError(f"{shown} cannot be read: {exc.strerror or exc}.") from None
    if len(data) > max_bytes:
        raise DocumentError(f"{shown} is larger than the {max_bytes / 1e6:.0f} MB limit, so it was "
                            "not read further; please share a smaller file.")
    return data
