"""Reading export files safely: zips, JSON files and uploads, with bounded memory.

Exports are untrusted uploads. Everything here streams and is capped (:class:`Limits`):

- A zip is checked from its directory before anything is decompressed: too many members, a
  member or a total over the size caps, or any member compressed at a ratio no JSON reaches
  (a zip bomb, however small each member) is refused. ``zipfile`` never inflates a member
  past its declared size, and checks the CRC at its end, so a lying header fails too. The
  caps hold for all the files of an import together (members, bytes), and the importer caps
  the rows (:attr:`Limits.max_rows`).
- JSON is parsed as a stream of events (``ijson.basic_parse``), so a file is never held in
  memory, one record at a time is built, and nesting deeper than :attr:`Limits.max_depth` is
  refused without building anything (a nesting bomb). ``ijson.parse`` is avoided on purpose:
  it builds a path string per event, quadratic in the depth.
- Exports are UTF-8. A UTF-16/32 file, or bytes that are not UTF-8, is refused with a message
  saying so (a spreadsheet or editor re-saved it); a UTF-8 byte-order mark is tolerated.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import ijson  # type: ignore[import-untyped]

from producers.history.formats import Nested, NotAnObject, Record
from producers.history.report import ImportRefused

EXTENDED_NAME = re.compile(r"Streaming_History_Audio_.*\.json", re.IGNORECASE)
LEGACY_NAME = re.compile(r"StreamingHistory.*\.json", re.IGNORECASE)
_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Caps on what an import reads. Real exports sit far below each of them: Spotify splits
    Extended Streaming History into files of about 12 MB, and a decade of heavy listening is a
    few hundred MB of JSON."""

    max_source_bytes: int = 2 << 30
    """An uploaded or given file (a zip, or one JSON file)."""
    max_member_bytes: int = 32 << 20
    """One JSON file, uncompressed. Also what bounds memory: the parser holds one token (a
    string) whole, and a 32 MB one costs about four times that at its peak."""
    max_total_bytes: int = 1 << 30
    """Every JSON file of the import, uncompressed: about 1.5 million rows, more than the
    heaviest listener plays since Spotify began."""
    max_ratio: float = 100.0
    """Uncompressed to compressed size of every zip member, small ones too; export JSON
    compresses about 10:1."""
    max_members: int = 1_000
    """Files in a zip (an export has a few dozen), and history files in one import."""
    max_rows: int = 1_500_000
    """Rows of the import: 200 a day for twenty years."""
    max_depth: int = 8
    """JSON nesting; an export is an array of flat objects (depth 2)."""
    max_fields: int = 100
    """Fields of one record; the Extended format has 21."""


@dataclass(frozen=True)
class HistoryFile:
    """One JSON file to read: on disk, in a zip, or an upload."""

    name: str
    size: int
    open: Callable[[], IO[bytes]]
    legacy_name: bool
    """Named like account-data StreamingHistory*.json (read after the extended files)."""


def _refuse(message: str) -> ImportRefused:
    return ImportRefused(message)


class Sources:
    """The JSON files of one import, their digest, and the temporary files they need."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.files: list[HistoryFile] = []
        self._digest = hashlib.sha256()
        self._zips: list[zipfile.ZipFile] = []
        self._spools: list[IO[bytes]] = []

    @property
    def digest(self) -> str:
        return self._digest.hexdigest()

    @property
    def total_bytes(self) -> int:
        return sum(file.size for file in self.files)

    def close(self) -> None:
        for archive in self._zips:
            archive.close()
        for spool in self._spools:
            spool.close()

    def __enter__(self) -> Sources:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def add(self, source: Path | BinaryIO) -> None:
        """Add a path (a zip, a JSON file, or a directory of export files) or an open upload."""
        if isinstance(source, Path):
            self._add_path(source)
        else:
            self._add_upload(source)
        self._check_total()

    def _add_path(self, path: Path) -> None:
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*.json")
                if EXTENDED_NAME.fullmatch(p.name) or LEGACY_NAME.fullmatch(p.name)
            )
            if not found:
                raise _refuse(
                    f"{path}: no Streaming_History_Audio_*.json or StreamingHistory*.json in it"
                )
            for file in found:
                self._add_path(file)
            return
        if not path.is_file():
            raise _refuse(f"{path}: no such file")
        size = path.stat().st_size
        if size > self.limits.max_source_bytes:
            raise _refuse(
                f"{path.name}: {size:,} bytes is over the {self.limits.max_source_bytes:,}-byte "
                "limit for one file"
            )
        with path.open("rb") as handle:
            self._hash(handle)
            handle.seek(0)
            magic = handle.read(4)
        if magic in (_ZIP_MAGIC, _EMPTY_ZIP_MAGIC):
            self._add_zip(path.name, path.open("rb"))
        else:
            self._add_json(path.name, size, lambda: path.open("rb"))

    def _add_upload(self, upload: BinaryIO) -> None:
        """Copy an upload to a temporary file (bounded memory, seekable for zips)."""
        name = Path(str(getattr(upload, "name", "upload"))).name
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self._spools.append(spool)
        size = 0
        while chunk := upload.read(_CHUNK):
            size += len(chunk)
            if size > self.limits.max_source_bytes:
                raise _refuse(
                    f"{name}: over the {self.limits.max_source_bytes:,}-byte limit for one file"
                )
            spool.write(chunk)
        spool.seek(0)
        self._hash(spool)
        spool.seek(0)
        magic = spool.read(4)
        spool.seek(0)
        if magic in (_ZIP_MAGIC, _EMPTY_ZIP_MAGIC):
            self._add_zip(name, spool)
        else:
            self._add_json(name, size, lambda: io.BufferedReader(_Unclosed(spool)))

    def _hash(self, handle: IO[bytes]) -> None:
        while chunk := handle.read(_CHUNK):
            self._digest.update(chunk)

    def _add_json(self, name: str, size: int, opener: Callable[[], IO[bytes]]) -> None:
        if size > self.limits.max_member_bytes:
            raise _refuse(
                f"{name}: {size:,} bytes of JSON is over the {self.limits.max_member_bytes:,}-byte "
                "limit for one file (Spotify's own files are about 12 MB)"
            )
        self._append(HistoryFile(name, size, opener, bool(LEGACY_NAME.fullmatch(name))))

    def _append(self, file: HistoryFile) -> None:
        """Add one JSON file, within the caps on files and bytes of the whole import."""
        if len(self.files) >= self.limits.max_members:
            raise _refuse(
                f"{file.name}: more than {self.limits.max_members:,} history files in one "
                "import, more than an export has"
            )
        self.files.append(file)
        self._check_total()

    def _add_zip(self, name: str, handle: IO[bytes]) -> None:
        self._spools.append(handle)
        try:
            archive = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:
            raise _refuse(f"{name}: not a readable zip ({exc})") from None
        self._zips.append(archive)
        infos = archive.infolist()
        if len(infos) > self.limits.max_members:
            raise _refuse(f"{name}: {len(infos):,} files in the zip, more than an export has")
        wanted = [
            info
            for info in infos
            if not info.is_dir()
            and (
                EXTENDED_NAME.fullmatch(Path(info.filename).name)
                or LEGACY_NAME.fullmatch(Path(info.filename).name)
            )
        ]
        if not wanted:
            raise _refuse(
                f"{name}: no streaming history in the zip (expected "
                "Streaming_History_Audio_*.json or StreamingHistory*.json)"
            )
        for info in sorted(wanted, key=lambda i: i.filename):
            label = f"{name}:{info.filename}"
            if info.file_size > self.limits.max_member_bytes:
                raise _refuse(
                    f"{label}: {info.file_size:,} bytes uncompressed is over the "
                    f"{self.limits.max_member_bytes:,}-byte limit for one file"
                )
            ratio = info.file_size / max(info.compress_size, 1)
            # Every member: thousands of small bombs expand as far as one large one.
            if ratio > self.limits.max_ratio:
                raise _refuse(
                    f"{label}: compressed {ratio:,.0f}:1, which no export reaches "
                    "(a zip bomb?); refused"
                )
            self._append(
                HistoryFile(
                    label,
                    info.file_size,
                    functools.partial(archive.open, info),
                    bool(LEGACY_NAME.fullmatch(Path(info.filename).name)),
                )
            )

    def _check_total(self) -> None:
        if self.total_bytes > self.limits.max_total_bytes:
            raise _refuse(
                f"{self.total_bytes:,} bytes of JSON in all is over the "
                f"{self.limits.max_total_bytes:,}-byte limit of one import"
            )

    def ordered(self) -> list[HistoryFile]:
        """Extended files first: legacy rows are resolved against the plays they hold."""
        return sorted(self.files, key=lambda file: (file.legacy_name, file.name))


class _Unclosed(io.RawIOBase):
    """A view of an upload's spool that leaves it open when the reader closes it."""

    def __init__(self, spool: IO[bytes]) -> None:
        spool.seek(0)
        self._spool = spool

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._spool.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Counting(io.RawIOBase):
    """Counts the bytes read (for progress) and enforces the per-file cap on any stream."""

    def __init__(self, raw: IO[bytes], name: str, limit: int) -> None:
        self._raw, self._name, self._limit = raw, name, limit
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        self.count += len(data)
        if self.count > self._limit:
            raise _refuse(f"{self._name}: more than {self._limit:,} bytes of JSON")
        buffer[: len(data)] = data
        return len(data)


def _check_encoding(head: bytes, name: str) -> int:
    """How many bytes to skip (a UTF-8 byte-order mark), or a refusal for other encodings."""
    if head.startswith(b"\xef\xbb\xbf"):
        return 3
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(head) >= 2 and b"\x00" in head[:4]):
        raise _refuse(
            f"{name}: encoded as UTF-16 or UTF-32; Spotify exports are UTF-8 (was the file "
            "re-saved by an editor or spreadsheet? use the original file)"
        )
    return 0


def _json_error(name: str, exc: Exception) -> ImportRefused:
    text = exc.args[0] if exc.args else exc
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    first = str(text).strip().splitlines()[0] if str(text).strip() else type(exc).__name__
    hint = ""
    if "premature EOF" in first:
        hint = " (the file ends early: was it cut short?)"
    elif "UTF8" in first or "utf-8" in first.lower():
        hint = " (the file is not UTF-8: was it re-saved in another encoding?)"
    return _refuse(f"{name}: not valid JSON: {first}{hint}")


def iter_records(file: HistoryFile, limits: Limits) -> Iterator[tuple[Record, int]]:
    """The elements of the file's top-level array, one at a time, with the bytes read so far.

    Raises :class:`ImportRefused` for anything that is not a JSON array (unknown JSON), bad
    JSON, a foreign encoding, nesting past the limit, or a corrupt zip member.
    """
    try:
        with file.open() as raw:
            counting = _Counting(raw, file.name, limits.max_member_bytes)
            stream = io.BufferedReader(counting, _CHUNK)
            head = stream.peek(4)[:4]
            if not head:
                raise _refuse(f"{file.name}: empty file")
            stream.read(_check_encoding(head, file.name))
            yield from _records(stream, counting, file.name, limits)
    except ImportRefused:
        raise
    except ijson.JSONError as exc:
        raise _json_error(file.name, exc) from None
    except UnicodeDecodeError as exc:
        raise _json_error(file.name, exc) from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise _refuse(f"{file.name}: the zip is corrupt ({exc})") from None


def _records(
    stream: IO[bytes], counting: _Counting, name: str, limits: Limits
) -> Iterator[tuple[Record, int]]:
    events = ijson.basic_parse(stream, use_float=True)
    first = next(events)
    if first[0] != "start_array":
        kind = {"start_map": "an object"}.get(first[0], "a single value")
        raise _refuse(f"{name}: unknown JSON: {kind} where an export has an array of plays")
    depth = 1
    record: dict[str, Any] | None = None
    key: str | None = None
    nested_from = 0
    for event, value in events:
        if event in ("start_map", "start_array"):
            depth += 1
            if depth > limits.max_depth:
                raise _refuse(
                    f"{name}: JSON nested more than {limits.max_depth} levels deep; an export "
                    "is an array of flat objects"
                )
            if depth == 2:
                if event == "start_map":
                    record = {}
                else:
                    nested_from = depth
                continue
            if nested_from == 0:
                nested_from = depth
                if record is not None and key is not None and len(record) < limits.max_fields:
                    record[key] = Nested()
            continue
        if event in ("end_map", "end_array"):
            depth -= 1
            if nested_from and depth < nested_from:
                nested_from = 0
                if depth == 1 and record is None:
                    yield NotAnObject("array"), counting.count
                continue
            if depth == 1 and record is not None:
                yield record, counting.count
                record = None
            continue
        if nested_from:
            continue
        if depth == 1:
            kind = type(value).__name__ if value is not None else "null"
            yield NotAnObject(kind), counting.count
            continue
        if event == "map_key":
            key = value
        elif record is not None and key is not None and len(record) < limits.max_fields:
            record[key] = value
