"""A durable, append-only log of transitions: one writer (the policy), any number of readers (learners).

Layout of a log folder:
    schema.json       {"fields": field name -> dtype and shape, "meta": what made the log}, fixed when the log is
                      created; ``meta`` names the encoder (its identity, the sha256 of its weights) and the
                      observation and action specs, so logs of different encoders are never mixed (a log from
                      before ``meta`` holds the fields alone and is trusted as it is)
    transitions.log   records, back to back: b"MSDT", payload length (uint32), CRC-32 of the payload (uint32),
                      then the payload: every field's bytes in schema order

Each ``append`` is one ``write`` of a whole record to a file opened for appending, followed by ``fsync`` when
``durable`` (the default). A writer killed in the middle of a record leaves a torn tail, fewer bytes than a
record: readers stop before it (it may still be in flight), and the next writer drops it when it opens the
log, then goes on appending, so a restarted policy resumes where it stopped and a kill loses at most the step
in flight. A record whose checksum fails with more bytes after it is corruption, and raises with its offset.

A bad last record of full length is not what a kill leaves (the kernel shows a reader only bytes already
written), but a crash of the machine or bit rot can. A reader stops before it too, since on a shared
filesystem a record still in flight can show its length before its bytes; a reader never takes it in, and
raises if records follow it. The writer, which opens the log when nothing can be in flight, drops it (one
step lost, like a kill's) with a ``CorruptRecordWarning`` naming the file and the record's offset, and counts
it in ``dropped_records``: the run goes on, but not silently.
"""

from __future__ import annotations

import json
import os
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from msdp.config import ConfigError, from_dict, to_dict
from msdp.specs import ObservationSpec

MAGIC = b"MSDT"
HEADER = struct.Struct("<4sII")  # magic, payload length, crc32
SCHEMA_FILE, LOG_FILE = "schema.json", "transitions.log"
# Fields added to the layout after logs were written without them (name -> dtype and shape). An older log reads
# them as zeros (False) and mixes with newer logs; a record given without one gets zeros too. Only appending
# needs the log's exact layout: a writer refuses to add records of another size to an older log.
ADDED_FIELDS = {"intervention": ("bool", ())}


class TransitionLogError(RuntimeError):
    """The log folder is missing, corrupt, or was written with another schema; the message names the file."""


class CorruptRecordWarning(UserWarning):
    """A writer dropped a full-length last record whose checksum or header failed (see the module docstring)."""


def _comparable(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with its observation spec's defaults filled in, so a log written before a spec field existed (the
    ROI: the whole frame by default) matches a run that records the field with its default value."""
    spec = meta.get("observation_spec")
    if isinstance(spec, dict):
        try:
            return {**meta, "observation_spec": to_dict(from_dict(ObservationSpec, spec))}
        except ConfigError:
            pass  # not a spec of ours: compared as it is
    return meta


class Schema:
    """Names, dtypes and shapes of one transition's fields; records are their raw bytes in this order."""

    def __init__(self, fields: dict[str, tuple[str, tuple[int, ...]]], meta: dict[str, Any] | None = None):
        self.fields = {name: (np.dtype(dtype).str, tuple(shape)) for name, (dtype, shape) in fields.items()}
        self.meta = dict(meta or {})
        self.sizes = {
            name: int(np.prod(shape)) * np.dtype(dtype).itemsize for name, (dtype, shape) in self.fields.items()
        }
        self.record_size = sum(self.sizes.values())

    def to_json(self) -> str:
        fields = {name: [dtype, list(shape)] for name, (dtype, shape) in self.fields.items()}
        return json.dumps({"fields": fields, "meta": self.meta}, indent=2)

    @classmethod
    def from_json(cls, text: str, where: Path) -> Schema:
        """TransitionLogError naming ``where`` for anything but a schema (the old layout: the fields alone)."""
        try:
            data = json.loads(text)
            fields, meta = (data["fields"], data.get("meta", {})) if "fields" in data else (data, {})
            return cls({name: (dtype, tuple(shape)) for name, (dtype, shape) in fields.items()}, meta)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise TransitionLogError(f"{where}: not a transition log schema ({exc})") from exc

    def check_same_source(self, other: Schema, mine: str, theirs: str, append: bool = False) -> None:
        """Refuse mixing logs that store other fields, or were made by different encoders or with different specs
        (``meta`` of a log from before it was recorded is not checked). An ``ADDED_FIELDS`` field that one of
        them lacks is no difference, unless ``append``: records of ``other``'s layout go into ``mine``."""
        ours, others = dict(self.fields), dict(other.fields)
        lacking = sorted(name for name in ADDED_FIELDS if (name in ours) != (name in others))
        for name in lacking:
            ours.pop(name, None)
            others.pop(name, None)
        if ours != others:
            raise TransitionLogError(f"{theirs} stores other fields than {mine}: {other.fields}, not {self.fields}")
        if append and lacking:
            raise TransitionLogError(
                f"{mine} and {theirs} differ in the field(s) {', '.join(lacking)} (a log from before they were "
                f"added): records of another layout cannot be appended to it; write a new log (the two mix in RLPD)"
            )
        if not self.meta or not other.meta:
            return
        ours, others = _comparable(self.meta), _comparable(other.meta)
        differing = [key for key in sorted(set(ours) | set(others)) if key != "encoder_checkpoint"
                     and ours.get(key) != others.get(key)]  # fmt: skip
        if differing:
            key = differing[0]
            raise TransitionLogError(
                f"{mine} and {theirs} come from different sources: {key} {ours.get(key)} vs {others.get(key)} "
                f"(encoders {ours.get('encoder_checkpoint')} and {others.get('encoder_checkpoint')})"
            )

    def encode(self, transition: dict[str, np.ndarray]) -> bytes:
        added = {name: np.zeros(shape, dtype) for name, (dtype, shape) in self.fields.items() if name in ADDED_FIELDS}
        transition = {**added, **transition}
        missing = sorted(set(self.fields) - set(transition))
        extra = sorted(set(transition) - set(self.fields))
        if missing or extra:
            raise ValueError(f"transition fields differ from the log's: missing {missing}, unexpected {extra}")
        parts = []
        for name, (dtype, shape) in self.fields.items():
            value = np.asarray(transition[name])
            if value.shape != shape:
                raise ValueError(f"transition field '{name}' has shape {value.shape}, the log stores {shape}")
            parts.append(np.ascontiguousarray(value, dtype=dtype).tobytes())
        return b"".join(parts)

    def decode(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Payloads as a (count, record_size) uint8 array -> one array per field, (count, *shape)."""
        out, start = {}, 0
        for name, (dtype, shape) in self.fields.items():
            size = self.sizes[name]
            out[name] = np.ascontiguousarray(rows[:, start : start + size]).view(dtype).reshape(len(rows), *shape)
            start += size
        return out


def _scan(data: bytes, schema: Schema, where: Path, start: int = 0) -> tuple[int, int, bool]:
    """(good records, byte offset in ``data`` after the last one, whether the rest is one full-length record that
    fails its check). A bad record with more bytes after it raises, with its place in the file (``data`` begins
    at byte ``start``; records all have one size)."""
    step = HEADER.size + schema.record_size
    count = offset = 0
    while offset + step <= len(data):
        magic, length, crc = HEADER.unpack_from(data, offset)
        payload = data[offset + HEADER.size : offset + step]
        if magic != MAGIC or length != schema.record_size or zlib.crc32(payload) != crc:
            if offset + step == len(data):
                return count, offset, True
            at = start + offset
            raise TransitionLogError(f"{where}: corrupt record {at // step} at byte {at} (checksum or header mismatch)")
        count += 1
        offset += step
    return count, offset, False


class TransitionWriter:
    """Appends transitions; opening an existing log resumes it (after dropping a torn or corrupt last record)."""

    def __init__(self, folder: str | Path, schema: Schema, durable: bool = True):
        self.folder, self.schema, self.durable = Path(folder), schema, durable
        self.folder.mkdir(parents=True, exist_ok=True)
        schema_path, self.path = self.folder / SCHEMA_FILE, self.folder / LOG_FILE
        if schema_path.exists():
            existing = Schema.from_json(schema_path.read_text(), schema_path)
            existing.check_same_source(schema, str(schema_path), "this run", append=True)
        else:
            schema_path.write_text(schema.to_json())
        data = self.path.read_bytes() if self.path.exists() else b""
        self.count, end, bad_last = _scan(data, schema, self.path)
        self.dropped_bytes = len(data) - end
        self.dropped_records = int(bad_last)  # full-length records dropped; a torn tail is only dropped_bytes
        if bad_last:
            warnings.warn(
                f"{self.path}: dropped corrupt last record {self.count} at byte {end} (checksum or header mismatch)",
                CorruptRecordWarning,
                stacklevel=2,
            )
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if self.dropped_bytes:
            os.ftruncate(self.fd, end)

    def append(self, transition: dict[str, np.ndarray]) -> int:
        """Write one transition (durably, if so configured); returns its index."""
        payload = self.schema.encode(transition)
        os.write(self.fd, HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload)
        if self.durable:
            os.fsync(self.fd)
        self.count += 1
        return self.count - 1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> TransitionWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class TransitionReader:
    """Reads a log while a writer may be appending to it; ``refresh`` picks up what was appended since.

    ``arrays`` holds one array per field, (transitions, *shape), grown in place (amortised doubling), so a
    learner can sample indices from it without copying the whole log on every refresh; an ``ADDED_FIELDS``
    field the log lacks is there too, all zeros.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        schema_path = self.folder / SCHEMA_FILE
        if not schema_path.exists():
            raise TransitionLogError(f"{schema_path} not found: {self.folder} is not a transition log (yet)")
        self.schema = Schema.from_json(schema_path.read_text(), schema_path)
        self.path = self.folder / LOG_FILE
        self.offset = 0
        self.count = 0
        fields = {**ADDED_FIELDS, **self.schema.fields}
        self._buffers = {name: np.zeros((1024, *shape), dtype) for name, (dtype, shape) in fields.items()}
        self.refresh()

    def __len__(self) -> int:
        return self.count

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        return {name: buffer[: self.count] for name, buffer in self._buffers.items()}

    def refresh(self) -> int:
        """Read the complete records appended since the last call; returns how many."""
        if not self.path.exists():
            return 0
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        count, end, _ = _scan(data, self.schema, self.path, self.offset)  # not a bad last record: in flight?
        if not count:
            return 0
        step = HEADER.size + self.schema.record_size
        records = np.frombuffer(data[:end], dtype=np.uint8).reshape(count, step)[:, HEADER.size :]
        new = self.schema.decode(records)
        needed = self.count + count
        for name, buffer in self._buffers.items():
            if needed > len(buffer):
                grown = np.zeros((max(needed, 2 * len(buffer)), *buffer.shape[1:]), buffer.dtype)
                grown[: self.count] = buffer[: self.count]
                self._buffers[name] = buffer = grown
            buffer[self.count : needed] = new.get(name, 0)  # an added field the log lacks: zeros
        self.count = needed
        self.offset += end
        return count
