"""Reading a bundle as hostile input: a directory or a .tar/.tar.gz, with hard limits (pure: standard library).

An archive is read once, as a stream (never seeking, never extracting by name): every member header is
checked before its data is read (regular file, plain expected name, no duplicate, size within limits), the
small files are kept in memory and the large .jsonl files are copied to a private spool directory while
their line lengths and counts are checked, so a bomb stops at the first limit it crosses. A directory
bundle is opened file by file with O_NOFOLLOW | O_NONBLOCK and fstat-checked to be a regular file.
"""

from __future__ import annotations

import gzip
import os
import stat
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from exchange.audit import layout as L
from exchange.audit.limits import Limits

LARGE_FILES = frozenset({L.RECORDS, L.PROOFS, L.CONSISTENCY})
SMALL_FILES = frozenset({L.MANIFEST, L.MANIFEST_SIG, L.CHECKPOINT, L.CATALOGUE, L.SUMMARY})
_CHUNK = 1 << 20
MAX_REFUSED = 100
_EXTENDED = frozenset({tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, b"X"})


class SourceError(Exception):
    """The bundle cannot be read safely; `code` is the stable reason, `file` the member concerned."""

    def __init__(self, code: str, message: str, file: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.file = code, message, file


def expected_name(name: str) -> bool:
    """True for a name a bundle may hold (fixed files and keys/<8 hex>.json)."""
    return name in LARGE_FILES or name in SMALL_FILES or L.KEY_FILE.match(name) is not None


@dataclass
class LineGuard:
    """Counts lines and the longest line of a stream fed in chunks; raises SourceError past the limits."""

    name: str
    limits: Limits
    run: int = 0
    lines: int = 0

    def feed(self, chunk: bytes) -> None:
        """Account for the next chunk."""
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            if nl < 0:
                self.run += len(chunk) - start
                break
            self.run += nl + 1 - start
            self._line()
            start = nl + 1
        if self.run > self.limits.max_line_bytes:
            raise SourceError("line_too_long", f"a line is longer than {self.limits.max_line_bytes} bytes", self.name)

    def _line(self) -> None:
        if self.run > self.limits.max_line_bytes:
            raise SourceError("line_too_long", f"a line is longer than {self.limits.max_line_bytes} bytes", self.name)
        self.lines += 1
        self.run = 0
        if self.lines > self.limits.max_records:
            raise SourceError("too_many_lines", f"more than {self.limits.max_records} lines", self.name)


class Source:
    """A bundle's files by name: small ones as bytes, large ones as binary streams (read once each)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.names: set[str] = set()

    def small(self, name: str) -> bytes | None:
        """The bytes of a small file, None when absent."""
        raise NotImplementedError

    def stream(self, name: str) -> BinaryIO | None:
        """A fresh binary stream over a file, None when absent."""
        raise NotImplementedError

    def close(self) -> None:
        """Release spool files and descriptors."""


# ---------------------------------------------------------------------------------------------------
# directories


def open_regular(path: Path, name: str, max_bytes: int) -> BinaryIO:
    """Open a file without following a link or blocking on a FIFO; refuse anything but a regular file."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise SourceError("file_not_regular", f"cannot open safely ({exc.strerror}): links are refused", name) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SourceError("file_not_regular", "not a regular file (link, FIFO, device or directory)", name)
        if st.st_size > max_bytes:
            raise SourceError("file_too_large", f"{st.st_size} bytes is over the limit of {max_bytes}", name)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class DirSource(Source):
    """A bundle directory, listed with lstat (no link followed)."""

    def __init__(self, root: Path, limits: Limits) -> None:
        super().__init__(str(root))
        self.root, self.limits = root, limits
        self.refused: list[SourceError] = []
        for entry in os.scandir(root):
            if len(self.refused) > MAX_REFUSED:
                raise SourceError("bundle_member_unexpected", f"more than {MAX_REFUSED} files are not bundle files")
            if entry.name == L.KEYS_DIR and entry.is_dir(follow_symlinks=False):
                self._scan_keys(Path(entry.path))
            elif not expected_name(entry.name):
                self.refused.append(SourceError("bundle_member_unexpected", "not a bundle file", entry.name))
            elif not entry.is_file(follow_symlinks=False):
                self.refused.append(SourceError("file_not_regular", "not a regular file", entry.name))
            else:
                self.names.add(entry.name)

    def _scan_keys(self, kdir: Path) -> None:
        for n, entry in enumerate(os.scandir(kdir)):
            name = f"{L.KEYS_DIR}/{entry.name}"
            if n >= self.limits.max_keys:
                self.refused.append(SourceError("too_many_keys", f"more than {self.limits.max_keys} keys", name))
                return
            if not expected_name(name):
                self.refused.append(SourceError("bundle_member_unexpected", "not a key file name", name))
            elif not entry.is_file(follow_symlinks=False):
                self.refused.append(SourceError("file_not_regular", "not a regular file", name))
            else:
                self.names.add(name)

    def small(self, name: str) -> bytes | None:
        """Read a small file (bounded)."""
        if name not in self.names:
            return None
        with open_regular(self.root / name, name, self.limits.max_small_file_bytes) as f:
            data = f.read(self.limits.max_small_file_bytes + 1)
        if len(data) > self.limits.max_small_file_bytes:
            raise SourceError("file_too_large", f"over the limit of {self.limits.max_small_file_bytes} bytes", name)
        return data

    def stream(self, name: str) -> BinaryIO | None:
        """Open a large file (regular, within the member limit)."""
        if name not in self.names:
            return None
        return open_regular(self.root / name, name, self.limits.max_member_bytes)


# ---------------------------------------------------------------------------------------------------
# archives


class _Counted:
    """A read-only stream that refuses to yield more than `limit` bytes in all."""

    def __init__(self, raw: IO[bytes], limit: int) -> None:
        self.raw, self.limit, self.count = raw, limit, 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = _CHUNK
        data = self.raw.read(min(size, self.limit - self.count + 1))
        self.count += len(data)
        if self.count > self.limit:
            raise SourceError("archive_too_large", f"the archive inflates past {self.limit} bytes")
        return data


def _guarded_tarinfo(max_header: int) -> type[tarfile.TarInfo]:
    class GuardedTarInfo(tarfile.TarInfo):
        """TarInfo that refuses an oversized extended header before tarfile reads it into memory."""

        def _proc_member(self, tarfile_: tarfile.TarFile) -> Any:  # tarfile's per-type header dispatch
            if self.type in _EXTENDED and self.size > max_header:
                raise SourceError(
                    "archive_header_too_large", f"a {self.size}-byte extended tar header (limit {max_header})"
                )
            return super()._proc_member(tarfile_)  # type: ignore[misc]

    return GuardedTarInfo


class ArchiveSource(Source):
    """A .tar or .tar.gz bundle read in one streaming pass."""

    def __init__(self, path: Path, limits: Limits) -> None:
        super().__init__(str(path))
        self.limits = limits
        self._small: dict[str, bytes] = {}
        self._spool = tempfile.TemporaryDirectory(prefix="hetex-verify-")
        self._large: dict[str, Path] = {}
        self._keys = 0
        try:
            self._read(path)
        except BaseException:
            self.close()
            raise

    def _read(self, path: Path) -> None:
        with open(path, "rb") as raw:
            magic = raw.read(2)
            raw.seek(0)
            inner: Any = gzip.GzipFile(fileobj=raw, mode="rb") if magic == b"\x1f\x8b" else raw
            counted = _Counted(inner, self.limits.max_inflated_bytes)
            tarinfo = _guarded_tarinfo(self.limits.max_tar_header_bytes)
            try:
                with tarfile.open(fileobj=counted, mode="r|", tarinfo=tarinfo) as tar:  # type: ignore[call-overload]
                    top: str | None = None
                    first = True
                    for member in tar:
                        top = self._member(tar, member, top, first)
                        first = False
            except SourceError:
                raise
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                raise SourceError("archive_unreadable", f"not a readable tar archive: {exc}") from None

    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo, top: str | None, first: bool) -> str | None:
        raw_name = member.name
        if raw_name.startswith("/") or "\\" in raw_name or "\x00" in raw_name:
            raise SourceError("archive_member_refused", f"member name {raw_name[:200]!r} is not a plain relative path")
        parts = [p for p in raw_name.split("/") if p not in ("", ".")]
        if not parts and member.isdir():
            return top  # "./": the archive's own root (`tar -C bundle -c .`)
        if not parts or ".." in parts:
            raise SourceError("archive_member_refused", f"member name {raw_name[:200]!r} escapes the bundle")
        if first and parts[0] != L.KEYS_DIR and (member.isdir() or len(parts) > 1) and not expected_name(parts[0]):
            top = parts[0]
        if top is not None:
            if parts[0] != top:
                raise SourceError("archive_member_refused", f"member {raw_name[:200]!r} is outside {top}/")
            parts = parts[1:]
        name = "/".join(parts)
        if member.isdir():
            if name not in ("", L.KEYS_DIR):
                raise SourceError("archive_member_refused", f"directory {raw_name[:200]!r} is not a bundle directory")
            return top
        if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or member.sparse is not None:
            what = "link" if member.issym() or member.islnk() else "sparse file" if member.sparse else "special file"
            raise SourceError("archive_member_not_regular", f"member is a {what}, not a regular file", name or raw_name)
        if not expected_name(name):
            raise SourceError("archive_member_unexpected", f"member {raw_name[:200]!r} is not a bundle file")
        if name in self.names:
            raise SourceError("archive_member_duplicate", "the archive holds this file twice", name)
        if name.startswith(L.KEYS_DIR + "/"):
            self._keys += 1
            if self._keys > self.limits.max_keys:
                raise SourceError("too_many_keys", f"more than {self.limits.max_keys} keys", name)
        self.names.add(name)
        big = name in LARGE_FILES
        limit = self.limits.max_member_bytes if big else self.limits.max_small_file_bytes
        if member.size > limit:
            raise SourceError("file_too_large", f"{member.size} bytes is over the limit of {limit}", name)
        src = tar.extractfile(member)
        assert src is not None  # a regular member always has data
        if not big:
            self._small[name] = src.read(limit + 1)
            return top
        guard = LineGuard(name, self.limits)
        target = Path(self._spool.name) / name
        with open(target, "wb") as out:
            while chunk := src.read(_CHUNK):
                guard.feed(chunk)
                out.write(chunk)
        self._large[name] = target
        return top

    def small(self, name: str) -> bytes | None:
        """Bytes of a small member."""
        return self._small.get(name)

    def stream(self, name: str) -> BinaryIO | None:
        """A stream over a spooled large member."""
        path = self._large.get(name)
        return None if path is None else open(path, "rb")

    def close(self) -> None:
        """Remove the spool directory."""
        self._spool.cleanup()


def open_source(path: Path, limits: Limits) -> Source:
    """DirSource or ArchiveSource for `path`; raise SourceError when it cannot be read safely."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SourceError("bundle_missing", f"{path}: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        return DirSource(path, limits)
    if stat.S_ISREG(st.st_mode):
        return ArchiveSource(path, limits)
    raise SourceError("bundle_missing", f"{path} is neither a directory nor a regular file")
