"""rosbag2 folders (MCAP or sqlite3) written and read with ``rosbags``, safe against a killed writer.

rosbags' MCAP writer keeps messages in an in-memory chunk and writes the file's index only at close, so a
recorder killed with SIGKILL would lose everything since the last 1 MiB chunk and leave a file that rosbags
cannot open. Here:

- ``BagWriter`` pushes the pending chunk (MCAP) or transaction (sqlite3) to disk every ``flush_period``
  seconds from a background thread, so a kill loses at most that much;
- ``BagReader`` / ``open_bag`` read an unfinished bag directly: an MCAP file without its footer is scanned
  record by record up to its first incomplete record, a sqlite3 database with a leftover journal is read from
  a rolled-back copy; the bag on disk is never modified by reading;
- ``recover_bag`` turns an unfinished bag into a normal one (``metadata.yaml`` and an indexed MCAP) that
  ``ros2 bag info`` and rosbags' own Reader accept.

Integrity: the MCAP files written here carry real CRC-32s (of each chunk's records, of the data section and of
the summary) where rosbags writes 0, "not computed". Reading checks the summary's CRC when a file is opened (a
summary that fails it is not trusted: the file is scanned like an unfinished one) and each chunk's CRC when the
chunk is read; a CRC of 0 (older files, other writers) is not checked. Damage (a chunk failing its CRC check, a
record that cannot be parsed) makes ``BagReader.messages`` / ``raw_messages`` raise ``BagDamaged``, but only after
yielding every message logged before the damaged chunk; its one-line message names the file, the byte and the
time. Callers that can use the readable part catch it: ``BagDataset`` keeps the samples before the damage and
logs the line, ``recover_bag`` copies those messages into a repaired bag and keeps the damaged file.

Every error is a ``BagError`` naming the file or folder and what is wrong with it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import shutil
import sqlite3
import struct
import tempfile
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from contextlib import ExitStack, closing, suppress
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from rosbags.interfaces import Connection, ConnectionExtRosbag2, MessageDefinitionFormat
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.rosbag2.reader import DirectoryReader
from rosbags.rosbag2.storage_mcap import (
    DECOMPRESSORS,
    ChunkInfo,
    McapReader,
    McapWriter,
    Schema,
    get_msgdef,
    get_qos,
    zstd,
)
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Reader, Sqlite3Writer
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
STORAGE_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3"}

_log = logging.getLogger(__name__)
_MCAP_MAGIC = b"\x89MCAP0\r\n"
_OP_FOOTER, _OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK, _OP_DATA_END = 0x02, 0x03, 0x04, 0x05, 0x06, 0x0F
_FOOTER_SIZE = 1 + 8 + 20 + len(_MCAP_MAGIC)  # opcode, length, summary start, summary offset start, crc; magic
_FOOTER_CRC = 1 + 8 + 16  # where the summary's CRC lies in the footer; it covers the footer up to there
_DATA_END_SIZE = 1 + 8 + 4  # opcode, length, data section CRC


class BagError(RuntimeError):
    """A bag cannot be written or read; the message names the file or folder and what is wrong."""


class _Damage(Exception):
    """Raised by the MCAP readers; ``BagReader`` turns it into a ``BagDamaged`` that also says what it read."""

    def __init__(self, file: Path, what: str, after_ns: int):
        super().__init__(what)
        self.file, self.what, self.after_ns = file, what, after_ns


class BagDamaged(BagError):
    """Part of a storage file fails its checks; raised after every message logged before ``after_ns`` was read.

    ``file`` is the damaged storage file, ``messages_read`` how many messages the interrupted iteration yielded.
    """

    def __init__(self, damage: _Damage, messages_read: int):
        self.file, self.after_ns, self.messages_read = damage.file, damage.after_ns, messages_read
        super().__init__(
            f"{damage.file}: {damage.what}: the bag is damaged after t={damage.after_ns * 1e-9:.3f} s; "
            f"{messages_read} messages before it were read"
        )


# ---------------------------------------------------------------------------------------------------- writing


class _Staged:
    """Takes the file's place while rosbags writes records, so that their CRC fields can be filled in first."""

    def __init__(self, offset: int):
        self.offset = offset
        self.data = bytearray()

    def tell(self) -> int:
        return self.offset + len(self.data)

    def write(self, data: bytes | memoryview) -> int:
        self.data += data
        return len(data)

    def close(self) -> None:
        """rosbags' ``close`` ends by closing the file; ``_FlushingMcapStorage.close`` closes the real one."""


class _FlushingMcapStorage(McapWriter):
    """rosbags' MCAP storage with ``flush``, and with the CRC-32s that rosbags leaves at 0 ("not computed")."""

    def __init__(self, path: Path, compression: Any) -> None:
        super().__init__(path, compression)
        self.bio.flush()
        self._data_crc = zlib.crc32(self.path.read_bytes())  # of the data section so far: magic and header

    def flush(self) -> None:
        """Close the pending chunk and hand it to the OS."""
        if self.chunk.msgs:
            self.close_chunk()
        self.bio.flush()

    def close_chunk(self) -> None:
        crc = zlib.crc32(self.chunk.bio.getbuffer())
        records = self._staged(super().close_chunk)  # the chunk and its message indexes
        records[9 + 24 : 9 + 28] = crc.to_bytes(4, "little")  # Chunk.uncompressed_crc
        self._data_crc = zlib.crc32(records, self._data_crc)
        self.bio.write(records)

    def close(self, version: int, metadata: str) -> None:
        if self.chunk.bio.tell():
            self.close_chunk()
        start = self.bio.tell()
        tail = self._staged(partial(super().close, version, metadata))  # metadata, DataEnd, summary, footer
        footer = len(tail) - _FOOTER_SIZE
        summary = struct.unpack_from("<Q", tail, footer + 9)[0] - start
        data_end = summary - _DATA_END_SIZE
        tail[data_end + 9 : summary] = zlib.crc32(tail[:data_end], self._data_crc).to_bytes(4, "little")
        tail[footer + _FOOTER_CRC : footer + _FOOTER_CRC + 4] = zlib.crc32(
            tail[summary : footer + _FOOTER_CRC]
        ).to_bytes(4, "little")
        self.bio.write(tail)
        self.bio.close()

    def _staged(self, write: Callable[[], None]) -> bytearray:
        """What ``write`` makes rosbags write to the file, held back instead."""
        file, self.bio = self.bio, _Staged(self.bio.tell())
        try:
            write()
            return self.bio.data
        finally:
            self.bio = file


class _FlushingSqlite3Storage(Sqlite3Writer):
    """rosbags' sqlite3 storage with ``flush`` (a commit), callable from the flush thread."""

    def __init__(self, path: Path, compression: Any) -> None:  # rosbags' signature; BagWriter never compresses
        self.path = path / f"{path.name}.db3"
        self.conn = sqlite3.connect(f"file:{self.path}", uri=True, check_same_thread=False)
        self.conn.executescript(self.SQLITE_SCHEMA)
        self.cursor = self.conn.cursor()

    def flush(self) -> None:
        self.conn.commit()


class _RosbagsWriter(Writer):
    STORAGE_PLUGINS = {StoragePlugin.MCAP: _FlushingMcapStorage, StoragePlugin.SQLITE3: _FlushingSqlite3Storage}


class BagWriter:
    """Writes a new rosbag2 folder; data reaches the disk at least every ``flush_period`` seconds.

    Thread-safe: ``write``/``write_raw`` may be called from any thread (e.g. several ROS callbacks).
    ``message_count`` counts messages written, ``flushed_message_count`` those already handed to the OS
    (they survive a SIGKILL of this process).
    """

    def __init__(self, path: Path | str, storage: str = "mcap", flush_period: float = 1.0):
        self.path = Path(path)
        if storage not in STORAGES:
            raise ValueError(f"bag {self.path}: storage {storage!r} is not supported; expected one of {list(STORAGES)}")
        if not flush_period > 0:
            raise ValueError(f"bag {self.path}: flush_period must be > 0 s, got {flush_period}")
        if self.path.exists():
            raise BagError(f"bag {self.path} exists already; BagWriter only creates new bags")
        self.storage = storage
        self.flush_period = flush_period
        self.message_count = 0
        self.flushed_message_count = 0
        self._writer = _RosbagsWriter(self.path, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage])
        try:
            self._writer.open()
        except (OSError, WriterError, sqlite3.Error) as exc:
            raise BagError(f"cannot create bag {self.path}: {exc}") from exc
        self._connections: dict[str, Connection] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._flush_error: BaseException | None = None
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_periodically, name=f"flush {self.path.name}", daemon=True)
        self._flusher.start()

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Declare a topic before writing to it; ``msgtype`` like "sensor_msgs/msg/Image" (ROS 2 Kilted)."""
        if msgtype not in TYPESTORE.fielddefs:
            raise BagError(f"bag {self.path}: topic {topic}: {msgtype!r} is not a ROS 2 Kilted message type")
        self._add_topic(topic, msgtype, TYPESTORE)

    def _add_topic(self, topic: str, msgtype: str, typestore: Typestore, qos: Collection[Any] = ()) -> None:
        with self._lock:
            self._check_open()
            known = self._connections.get(topic)
            if known is not None:
                if known.msgtype != msgtype:
                    raise BagError(f"bag {self.path}: topic {topic} was added as {known.msgtype}, not {msgtype}")
                return
            self._connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=typestore, offered_qos_profiles=list(qos)
            )

    def _connection(self, topic: str) -> Connection:
        connection = self._connections.get(topic)
        if connection is None:
            added = ", ".join(self._connections) or "none"
            raise BagError(f"bag {self.path}: topic {topic} was not added with add_topic (added: {added})")
        return connection

    def write_raw(self, topic: str, timestamp_ns: int, data: bytes | memoryview) -> None:
        """Write one CDR-serialised message (e.g. from an rclpy raw subscription) with its bag time."""
        connection = self._connection(topic)
        if timestamp_ns < 0:
            raise BagError(f"bag {self.path}: topic {topic}: negative timestamp {timestamp_ns} ns")
        with self._lock:
            self._check_open()
            try:
                self._writer.write(connection, int(timestamp_ns), data)
            except (OSError, WriterError, sqlite3.Error) as exc:
                raise BagError(f"bag {self.path}: cannot write to topic {topic}: {exc}") from exc
            self.message_count += 1

    def write(self, topic: str, timestamp_ns: int, msg: Any) -> None:
        """Serialise a rosbags message object (built from ``TYPESTORE``) and write it."""
        connection = self._connection(topic)
        msgtype = getattr(msg, "__msgtype__", type(msg).__name__)
        if msgtype != connection.msgtype:
            raise BagError(f"bag {self.path}: topic {topic} carries {connection.msgtype}, got a {msgtype}")
        try:
            data = TYPESTORE.serialize_cdr(msg, msgtype)
        except (TypeError, ValueError, AttributeError, struct.error) as exc:
            raise BagError(f"bag {self.path}: cannot serialise the {msgtype} for topic {topic}: {exc!r}") from exc
        self.write_raw(topic, timestamp_ns, data)

    def flush(self) -> None:
        """Put everything written so far on disk (the flush thread calls this every ``flush_period``)."""
        with self._lock:
            self._check_open()
            try:
                self._writer.storage.flush()
            except (OSError, sqlite3.Error) as exc:
                raise BagError(f"bag {self.path}: cannot flush to disk: {exc}") from exc
            self.flushed_message_count = self.message_count

    def _flush_periodically(self) -> None:
        while not self._stop.wait(self.flush_period):
            try:
                self.flush()
            except BagError as exc:  # raised by the next write, not lost in this thread
                self._flush_error = exc
                return

    def _check_open(self) -> None:
        if self._closed:
            raise BagError(f"bag {self.path} is closed")
        if self._flush_error is not None:
            raise self._flush_error

    def close(self) -> None:
        """Write the index and metadata.yaml; the bag is complete afterwards. Idempotent."""
        if self._closed:
            return
        self._stop.set()
        self._flusher.join()
        with self._lock:
            self._closed = True
            try:
                self._writer.close()
            except (OSError, WriterError, sqlite3.Error) as exc:
                raise BagError(f"bag {self.path}: cannot finish the bag: {exc}") from exc
            self.flushed_message_count = self.message_count

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Chunk:
    offset: int  # of the Chunk record in the file
    start_time: int
    end_time: int
    data_offset: int  # of its (compressed) records
    compressed_size: int
    uncompressed_size: int
    compression: str
    crc: int

    def damage(self, file: Path, problem: str) -> _Damage:
        where = f"chunk at byte {self.offset} (messages from t={self.start_time * 1e-9:.3f} s to"
        return _Damage(file, f"{where} {self.end_time * 1e-9:.3f} s) {problem}", self.start_time)


def _chunk_header(body: bytes | memoryview, offset: int) -> _Chunk:
    """The fields of the Chunk record at ``offset``; ``body`` starts after its opcode and length."""
    start_time, end_time, uncompressed_size, crc = struct.unpack_from("<QQQI", body, 0)
    compression, position = _read_string(body, 28)
    (compressed_size,) = struct.unpack_from("<Q", body, position)
    data_offset = offset + 9 + position + 8
    return _Chunk(offset, start_time, end_time, data_offset, compressed_size, uncompressed_size, compression, crc)


def _uncompressed(file: Path, chunk: _Chunk, data: bytes | memoryview) -> bytes:
    """A chunk's records, checked against their size and CRC-32 (0: the writer computed none)."""
    decompress = DECOMPRESSORS.get(chunk.compression)
    if decompress is None:
        raise chunk.damage(file, f"has an unknown compression {chunk.compression!r}")
    try:
        records = decompress(bytes(data), chunk.uncompressed_size)
    except (RuntimeError, zstd.ZstdError, MemoryError) as exc:  # lz4 raises RuntimeError
        raise chunk.damage(file, f"cannot be decompressed ({exc})") from exc
    if len(records) != chunk.uncompressed_size:
        raise chunk.damage(file, f"holds {len(records)} bytes of records, not {chunk.uncompressed_size}")
    if chunk.crc and zlib.crc32(records) != chunk.crc:
        raise chunk.damage(file, "fails its CRC check")
    return records


def _records(buffer: bytes | memoryview) -> Iterator[tuple[int, memoryview]]:
    """(opcode, body) of each record in a chunk's records; a record running past the end is invalid."""
    view = memoryview(buffer)
    position = 0
    while position < len(view):
        if position + 9 > len(view):
            raise ValueError(f"record header at byte {position} of the chunk is cut off")
        op, length = struct.unpack_from("<BQ", view, position)
        end = position + 9 + length
        if end > len(view):
            raise ValueError(f"record at byte {position} of the chunk runs past its end")
        yield op, view[position + 9 : end]
        position = end


def _message_header(record: memoryview) -> tuple[int, int]:
    """(channel, log time) of a Message record's body."""
    if len(record) < 22:
        raise ValueError(f"message record of {len(record)} bytes is too short")
    channel, _, log_time = struct.unpack_from("<HIQ", record, 0)
    return channel, log_time


def _read_string(body: bytes | memoryview, position: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<I", body, position)
    end = position + 4 + length
    if end > len(body):
        raise ValueError("string runs past its record")
    return bytes(body[position + 4 : end]).decode(), end


_Item = tuple[int, int, int, bytes]  # log time, order (a placeholder's is negative), channel (-1: placeholder), data


def _read_chunk(
    file: BinaryIO, path: Path, chunk: _Chunk, wanted: Collection[int], order: Iterator[int]
) -> list[_Item]:
    """The messages of the wanted channels in a chunk, sorted; damage raises ``_Damage``."""
    file.seek(chunk.data_offset)
    records = _uncompressed(path, chunk, file.read(chunk.compressed_size))
    messages = []
    try:
        for op, record in _records(records):
            if op == _OP_MESSAGE:
                channel, log_time = _message_header(record)
                if channel in wanted:
                    messages.append((log_time, next(order), channel, bytes(record[22:])))
    except ValueError as exc:
        raise chunk.damage(path, f"holds an invalid record ({exc})") from exc
    return sorted(messages)


def _when_due(start_time: int, key: int, read: Callable[[], list[_Item]]) -> Iterator[_Item]:
    """A chunk for ``heapq.merge``: a placeholder at its start time, so that it is read only once it is due."""
    yield start_time, key, -1, b""
    yield from read()


def _merged(sources: list[Iterator[_Item]], wanted: dict[int, Connection]) -> Iterator[tuple[Connection, int, bytes]]:
    for log_time, _, channel, data in heapq.merge(*sources):
        if channel >= 0:
            yield wanted[channel], log_time, data


class _McapScanReader:
    """Reads an MCAP file front to back without its summary section: for a file whose writer never finished.

    Stops at the first incomplete record (a killed writer leaves a partly written one at the end) and says why in
    ``problem``, or at the first damaged one (``damage``: ``messages`` raises it after the messages before it).
    Same interface as rosbags' Reader (``connections``, ``messages``).
    """

    def __init__(self, path: Path):
        self.path = path
        self.problem = ""
        self.damage: _Damage | None = None
        self.connections: list[Connection] = []
        self._schemas: dict[int, Schema] = {}
        self._chunks: list[_Chunk] = []
        self._loose: list[tuple[int, int, int, int]] = []  # messages outside chunks: time, channel, offset, size
        self._counts: Counter[int] = Counter()
        self._last_time = 0  # of the messages found so far
        self._file = path.open("rb")
        try:
            self._scan()
        except BaseException:
            self._file.close()
            raise
        self.connections = [c._replace(msgcount=self._counts[c.id]) for c in self.connections]

    def _scan(self) -> None:
        file = self._file
        size = os.fstat(file.fileno()).st_size
        magic = file.read(len(_MCAP_MAGIC))
        if magic != _MCAP_MAGIC:
            what = "is empty" if not magic else f"does not start with the MCAP magic (starts with {magic!r})"
            raise BagError(f"{self.path} is not an MCAP file: it {what}")
        position = len(_MCAP_MAGIC)
        while True:
            if position + 9 > size:
                self.problem = "it has no footer" if position == size else f"it ends within a record at byte {position}"
                return
            file.seek(position)
            op, length = struct.unpack("<BQ", file.read(9))
            end = position + 9 + length
            if end > size:
                self.problem = f"its last record (at byte {position}, {length} bytes) is cut off at byte {size}"
                return
            if op in (_OP_DATA_END, _OP_FOOTER):
                return
            try:
                if op == _OP_CHUNK:
                    self._scan_chunk(position, memoryview(file.read(length)))
                elif op == _OP_MESSAGE:
                    channel, log_time = _message_header(memoryview(file.read(min(length, 22))))
                    self._loose.append((log_time, channel, position + 9 + 22, length - 22))
                    self._counts[channel] += 1
                    self._last_time = max(self._last_time, log_time)
                elif op in (_OP_SCHEMA, _OP_CHANNEL):
                    self._definition(op, memoryview(file.read(length)))
            except _Damage as damage:
                self.damage = damage
                return
            except (ValueError, struct.error, ReaderError, LookupError, TypeError) as exc:  # TypeError: bad QoS
                self.damage = _Damage(self.path, f"record at byte {position} is invalid ({exc})", self._last_time)
                return
            position = end

    def _scan_chunk(self, offset: int, body: memoryview) -> None:
        chunk = _chunk_header(body, offset)
        data_start = chunk.data_offset - offset - 9
        if data_start + chunk.compressed_size > len(body):
            raise ValueError("compressed records run past the chunk")
        records = _uncompressed(self.path, chunk, body[data_start : data_start + chunk.compressed_size])
        counts: Counter[int] = Counter()
        times = []
        try:
            for op, record in _records(records):
                if op == _OP_MESSAGE:
                    channel, log_time = _message_header(record)
                    counts[channel] += 1
                    times.append(log_time)
                elif op in (_OP_SCHEMA, _OP_CHANNEL):
                    self._definition(op, record)
        except (ValueError, struct.error, ReaderError, LookupError, TypeError) as exc:
            raise chunk.damage(self.path, f"holds an invalid record ({exc})") from exc
        self._counts += counts
        self._last_time = max([self._last_time, *times])
        # its first message's time: the header's start time is not covered by the CRC
        self._chunks.append(replace(chunk, start_time=min(times, default=chunk.start_time)))

    def _definition(self, op: int, body: memoryview) -> None:
        (key,) = struct.unpack_from("<H", body, 0)
        if op == _OP_SCHEMA:
            name, position = _read_string(body, 2)
            encoding, position = _read_string(body, position)
            data, _ = _read_string(body, position)
            self._schemas[key] = Schema(key, name, encoding, data)
            return
        if any(c.id == key for c in self.connections):
            return
        (schema_id,) = struct.unpack_from("<H", body, 2)
        schema = self._schemas.get(schema_id)
        if schema is None:
            raise ValueError(f"channel {key} refers to unknown schema {schema_id}")
        topic, position = _read_string(body, 4)
        encoding, position = _read_string(body, position)
        (metadata_size,) = struct.unpack_from("<I", body, position)
        metadata = bytes(body[position + 4 : position + 4 + metadata_size])
        ext = ConnectionExtRosbag2(encoding, get_qos(metadata))
        self.connections.append(Connection(key, topic, schema.name, get_msgdef(schema), "", 0, ext, self))

    def messages(self, connections: Collection[Connection] = ()) -> Iterator[tuple[Connection, int, bytes]]:
        """Messages in log-time order (chunks are merged lazily, as rosbags does), then the damage, if any."""
        wanted = {c.id: c for c in (connections or self.connections)}
        order = itertools.count()
        sources = [
            _when_due(chunk.start_time, -1 - i, partial(_read_chunk, self._file, self.path, chunk, wanted, order))
            for i, chunk in enumerate(self._chunks)
        ]
        sources.append(self._loose_messages(wanted, order))
        yield from _merged(sources, wanted)
        if self.damage is not None:
            raise self.damage

    def _loose_messages(self, wanted: dict[int, Connection], order: Iterator[int]) -> Iterator[_Item]:
        for log_time, channel, offset, size in sorted(self._loose):
            if channel in wanted:
                self._file.seek(offset)
                yield log_time, next(order), channel, self._file.read(size)

    def close(self) -> None:
        self._file.close()


class _CheckedMcapReader(McapReader):
    """rosbags' MCAP storage reader for the summary (connections, counts, chunk index); the chunks are read and
    checked here."""

    def open(self) -> None:
        try:
            super().open()
        except ReaderError as exc:
            raise BagError(f"cannot read {self.path}: {exc}") from exc
        except Exception as exc:  # rosbags' parser raises whatever a damaged header or summary provokes
            raise BagError(f"cannot read {self.path}: its header or summary is invalid ({exc!r})") from exc

    def messages(
        self, connections: Collection[Connection], start: int | None = None, stop: int | None = None
    ) -> Iterator[tuple[Connection, int, bytes]]:
        """Messages in log-time order; a damaged chunk raises ``_Damage`` when it is due."""
        assert start is None and stop is None, "BagReader reads whole files"
        if not self.chunks:  # not written by BagWriter: its messages lie outside chunks, which the scan reads
            with closing(_McapScanReader(Path(self.path))) as scan:
                yield from scan.messages(connections)
            return
        wanted = {c.id: c for c in connections}
        order = itertools.count()
        sources = [
            _when_due(info.message_start_time, -1 - i, partial(self._read_indexed, info, wanted, order))
            for i, info in enumerate(self.chunks)
        ]
        yield from _merged(sources, wanted)

    def _read_indexed(self, info: ChunkInfo, wanted: Collection[int], order: Iterator[int]) -> list[_Item]:
        """The chunk the summary's index entry points to, if it is there as indexed."""
        assert self.bio is not None
        path = Path(self.path)
        data_offset = info.chunk_start_offset + 9 + 40 + len(info.compression.encode())
        indexed = _Chunk(
            info.chunk_start_offset, info.message_start_time, info.message_end_time, data_offset,
            info.compressed_size, info.uncompressed_size, info.compression, 0,
        )  # fmt: skip
        if info.chunk_start_offset + info.chunk_length > os.fstat(self.bio.fileno()).st_size:
            raise indexed.damage(path, "is indexed past the end of the file")
        self.bio.seek(info.chunk_start_offset)
        head = memoryview(self.bio.read(data_offset - info.chunk_start_offset))
        try:
            op, length = struct.unpack_from("<BQ", head, 0)
            chunk = _chunk_header(head[9:], info.chunk_start_offset)
        except (ValueError, struct.error) as exc:
            raise indexed.damage(path, f"has an invalid header ({exc})") from exc
        if (op, length, chunk) != (_OP_CHUNK, info.chunk_length - 9, replace(indexed, crc=chunk.crc)):
            raise indexed.damage(path, "does not match the summary's index of it")
        return _read_chunk(self.bio, path, chunk, wanted, order)


class _DirectoryReader(DirectoryReader):
    STORAGE_PLUGINS = {"mcap": _CheckedMcapReader, "sqlite3": Sqlite3Reader}


class _CheckingReader(Reader):
    """rosbags' Reader, reading MCAP files with ``_CheckedMcapReader``."""

    STORAGE_PLUGINS = {"dir": _DirectoryReader, ".mcap": _CheckedMcapReader, ".db3": Sqlite3Reader}


def _mcap_summary_problem(path: Path) -> str:
    """Why the file's summary cannot be used ("" if it can): it has no footer or no summary, or the summary fails
    its CRC check. Such a file is scanned."""
    with path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size < 2 * len(_MCAP_MAGIC) + _FOOTER_SIZE:
            return "its summary and footer are missing"
        footer_start = file.seek(-_FOOTER_SIZE, os.SEEK_END)
        footer = file.read()
        if footer[:9] != struct.pack("<BQ", _OP_FOOTER, 20) or not footer.endswith(_MCAP_MAGIC):
            return "its summary and footer are missing"
        summary_start, _, crc = struct.unpack_from("<QQI", footer, 9)
        if not summary_start:
            return "it has no summary"
        if not crc:
            return ""
        if summary_start > footer_start:
            return f"its footer puts the summary at byte {summary_start}, past the footer at byte {footer_start}"
        file.seek(summary_start)
        summary = file.read(footer_start - summary_start) + footer[:_FOOTER_CRC]
    return "" if zlib.crc32(summary) == crc else "its summary fails its CRC check"


def _sqlite_leftovers(path: Path) -> list[Path]:
    """A rollback journal or write-ahead log next to a database: its writer did not finish a transaction."""
    candidates = (path.with_name(path.name + suffix) for suffix in ("-journal", "-wal"))
    return [p for p in candidates if p.exists() and p.stat().st_size > 0]


def _typestore_for(connections: Collection[Connection], where: Path) -> Typestore:
    """TYPESTORE, or a copy that also knows the non-standard types the bag defines."""
    unknown = {c.msgtype: c.msgdef for c in connections if c.msgtype not in TYPESTORE.fielddefs}
    if not unknown:
        return TYPESTORE
    store = get_typestore(Stores.ROS2_KILTED)
    for msgtype, msgdef in unknown.items():
        try:
            if msgdef.format == MessageDefinitionFormat.MSG:
                store.register(get_types_from_msg(msgdef.data, msgtype))
            elif msgdef.format == MessageDefinitionFormat.IDL:
                store.register(get_types_from_idl(msgdef.data))
        except Exception as exc:  # rosbags raises several parser exception types
            raise BagError(f"{where}: the bag's definition of {msgtype} cannot be parsed: {exc}") from exc
    return store


class BagReader:
    """Reads a rosbag2 folder (MCAP or sqlite3), whole or left unfinished by a killed writer.

    ``topics`` maps topic -> message type, ``message_counts`` topic -> messages; ``needs_recovery`` is True
    for an unfinished bag or an MCAP file without a usable summary (it is still read, up to its last complete
    message; ``recover_bag`` repairs it).
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.files = self._storage_files()
        self.problems: list[str] = []
        self._stack = ExitStack()
        self._readers: list[Any] = []
        try:
            self._open()
        except BaseException:
            self._stack.close()
            raise
        self.connections = [c for reader in self._readers for c in reader.connections]
        self.typestore = _typestore_for(self.connections, self.path)

    def _storage_files(self) -> list[Path]:
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        if not self.path.is_dir():
            raise BagError(
                f"{self.path} is not a rosbag2 folder (expected a folder with metadata.yaml and .mcap or .db3 files)"
            )
        files = sorted(p for p in self.path.iterdir() if p.suffix in STORAGE_SUFFIXES and p.is_file())
        if not files and not (self.path / "metadata.yaml").exists():
            content = ", ".join(sorted(p.name for p in self.path.iterdir())) or "nothing"
            raise BagError(
                f"{self.path} is not a rosbag2 folder: no metadata.yaml, no .mcap or .db3 file (it holds {content})"
            )
        return files

    @property
    def needs_recovery(self) -> bool:
        return bool(self.problems)

    @property
    def storage(self) -> str:
        """The storage kind, mcap or sqlite3 (that of the first storage file)."""
        return STORAGE_SUFFIXES[self.files[0].suffix] if self.files else "mcap"

    def _open(self) -> None:
        unfinished = {f: problem for f in self.files if f.suffix == ".mcap" and (problem := _mcap_summary_problem(f))}
        leftovers = {f: _sqlite_leftovers(f) for f in self.files if f.suffix == ".db3"}
        if not (self.path / "metadata.yaml").exists():
            self.problems.append("it has no metadata.yaml")
        self.problems += [f"{p.name} holds an unfinished transaction" for ps in leftovers.values() for p in ps]
        if not self.problems and not unfinished:
            self._readers.append(self._rosbags_reader(self.path))
            return
        for file in self.files:
            if file in unfinished:
                reader = self._stack.enter_context(closing(self._scan_reader(file)))
                self.problems.append(f"{file.name}: {reader.problem or unfinished[file]}")
                self._readers.append(reader)
            elif leftovers.get(file):
                self._readers.append(self._rosbags_reader(self._settled_copy(file)))
            else:
                self._readers.append(self._rosbags_reader(file))
        _log.warning(
            "bag %s needs recovery (%s); reading its %d complete messages. recover_bag repairs it.",
            self.path, "; ".join(self.problems), sum(c.msgcount for r in self._readers for c in r.connections),
        )  # fmt: skip

    def _scan_reader(self, file: Path) -> _McapScanReader:
        try:
            return _McapScanReader(file)
        except OSError as exc:
            raise BagError(f"cannot read {file}: {exc}") from exc

    def _rosbags_reader(self, path: Path) -> Reader:
        try:
            reader = _CheckingReader(path)
            reader.open()
        except (ReaderError, OSError, KeyError, ValueError) as exc:
            raise BagError(f"cannot read bag {path}: {exc}") from exc
        self._stack.callback(reader.close)
        return reader

    def _settled_copy(self, file: Path) -> Path:
        """A temporary copy of a database with its leftover journal applied, so the bag itself is not touched."""
        folder = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="msdp-bag-")))
        for source in (file, *_sqlite_leftovers(file)):
            shutil.copy2(source, folder / source.name)
        copy = folder / file.name
        try:
            with closing(sqlite3.connect(copy)) as connection:  # opening it read-write applies the journal
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            raise BagError(f"cannot read database {file}: {exc}") from exc
        return copy

    @property
    def topics(self) -> dict[str, str]:
        return {c.topic: c.msgtype for c in self.connections}

    @property
    def message_counts(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for c in self.connections:
            counts[c.topic] += c.msgcount
        return dict(counts)

    def raw_messages(self, topics: Collection[str] | None = None) -> Iterator[tuple[Connection, int, bytes]]:
        """(connection, bag timestamp ns, CDR bytes), in time order within each storage file.

        Raises ``BagDamaged`` where a storage file is damaged, after yielding every message logged before it.
        """
        read = 0
        for reader in self._readers:
            selected = [c for c in reader.connections if topics is None or c.topic in topics]
            if not selected:
                continue
            where = getattr(reader, "path", self.path)
            try:
                for message in reader.messages(selected):
                    yield message
                    read += 1
            except _Damage as damage:
                raise BagDamaged(damage, read) from None
            except (ReaderError, OSError, ValueError, struct.error, sqlite3.Error) as exc:
                raise BagError(f"cannot read bag {where}: {exc}") from exc

    def messages(self, topics: Collection[str] | None = None) -> Iterator[tuple[str, str, int, Any]]:
        """(topic, msgtype, bag timestamp ns, message object), deserialised with ``typestore``."""
        for connection, timestamp, data in self.raw_messages(topics):
            try:
                msg = self.typestore.deserialize_cdr(data, connection.msgtype)
            except Exception as exc:  # the deserialiser raises whatever the corrupt bytes provoke
                raise BagError(
                    f"bag {self.path}: cannot decode the {connection.msgtype} message on {connection.topic} "
                    f"at {timestamp} ns: {exc!r}"
                ) from exc
            yield connection.topic, connection.msgtype, timestamp, msg

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_bag(path: Path | str, topics: Collection[str] | None = None) -> Iterator[tuple[str, str, int, Any]]:
    """Messages of a bag folder in time order: (topic, msgtype, timestamp ns, message object).

    ``topics`` restricts it to those topics. An unfinished bag is read up to its last complete message.
    """
    with BagReader(path) as reader:
        yield from reader.messages(topics)


def bag_topics(path: Path | str) -> dict[str, str]:
    """Topic -> message type of a bag folder."""
    with BagReader(path) as reader:
        return reader.topics


def recover_bag(path: Path | str) -> int:
    """Rebuild an unfinished or damaged bag into a normal one; return the number of messages it holds.

    The readable messages are copied into a fresh bag of the same storage kind, which then replaces the
    original files: an indexed MCAP (or a database without leftover journal) and metadata.yaml. Of a damaged
    bag, those are the messages logged before the damage; the damaged file is kept as ``<name>.damaged`` (later
    chunks may be intact) and the damage is logged. A bag that reads completely and needs no recovery is left
    untouched.
    """
    path = Path(path)
    with BagReader(path) as reader:
        if not reader.needs_recovery:
            with suppress(BagDamaged):
                return sum(1 for _ in reader.raw_messages())  # reading checks every chunk
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.recover-", dir=path.parent))
        try:
            count, damage = _copy_bag(reader, staging / path.name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    try:
        (new_file,) = (p for p in (staging / path.name).iterdir() if p.suffix in STORAGE_SUFFIXES)
        for old in reader.files:  # a journal left next to the new database would be applied to it
            for leftover in _sqlite_leftovers(old):
                leftover.unlink()
        if damage is not None:
            os.replace(damage.file, damage.file.with_name(damage.file.name + ".damaged"))
        os.replace(new_file, path / new_file.name)
        os.replace(staging / path.name / "metadata.yaml", path / "metadata.yaml")
        for old in reader.files:
            if old.name != new_file.name and (damage is None or old != damage.file):
                old.unlink()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if damage is not None:
        _log.warning("%s; recovered bag %s holds those %d messages, the damaged file is kept as %s.damaged",
                     damage, path, count, damage.file.name)  # fmt: skip
    else:
        _log.info("recovered bag %s: %d messages", path, count)
    return count


def _copy_bag(reader: BagReader, destination: Path) -> tuple[int, BagDamaged | None]:
    """Copy every readable message, with its topic's type and QoS, into a new bag; return how many, and the
    damage that ended the copy early, if any."""
    damage = None
    with BagWriter(destination, storage=reader.storage, flush_period=3600.0) as writer:
        for c in reader.connections:
            writer._add_topic(c.topic, c.msgtype, reader.typestore, c.ext.offered_qos_profiles)
        try:
            for connection, timestamp, data in reader.raw_messages():
                writer.write_raw(connection.topic, timestamp, data)
        except BagDamaged as exc:
            damage = exc
    return writer.message_count, damage
