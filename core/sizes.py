"""The one unit convention for sizes in settings and messages: a megabyte (``*_mb``) is 1,000,000 bytes.

Slack, Discord's upload limits as users read them, and disk tools all speak decimal megabytes; one rule
means a limit set to 25 refuses the same file on every platform and says the same number when it does.
"""

from __future__ import annotations

BYTES_PER_MB = 1_000_000


def bytes_from_mb(size_mb: float) -> int:
    """``size_mb`` megabytes in bytes (rounded down)."""
    return int(size_mb * BYTES_PER_MB)


def mb_from_bytes(size_bytes: int) -> float:
    """``size_bytes`` in megabytes, for messages such as "is 31.2 MB; the limit here is 25 MB"."""
    return size_bytes / BYTES_PER_MB
