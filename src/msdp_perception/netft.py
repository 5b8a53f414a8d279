"""ATI Net F/T: the RDT streaming protocol and the box's calibration page, without ROS.

RDT (Raw Data Transfer, from ATI's Net F/T documentation): the requester sends 8 bytes big-endian to UDP port
49152 -- uint16 0x1234, uint16 command, uint32 sample count (0 = endless) -- and the box answers from that port
to the requester's address and port with one datagram per record in real-time mode (command 0x0002): 36 bytes
big-endian, uint32 RDT sequence (one per datagram sent), uint32 F/T sequence (one per internal sample), uint32
status (0 = healthy; the bits flag saturation and errors), int32 Fx Fy Fz Tx Ty Tz in counts. A value is counts /
counts per unit, where the counts per force and per torque unit and the units themselves are served at
``http://<box>/netftapi2.xml`` (``cfgcpf``, ``cfgcpt``, ``scfgfu``, ``scfgtu``).

Here: request encoding and record parsing (``request``, ``parse_record``), the sequence arithmetic (uint32
wrap-around), the calibration page (``parse_calibration``, ``fetch_calibration``; counts are converted to N and Nm,
other units by exact factors or refused), ``RdtStream`` (the socket, start/stop, re-sending the start request
while the sensor is silent, counters), and the two bits of signal processing the node applies (``Decimator``:
average to a publish rate; ``TareWindow``: software bias from the last N records).
"""

from __future__ import annotations

import math
import socket
import struct
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

RDT_PORT = 49152
RDT_HEADER = 0x1234
# commands
STOP = 0x0000
START_REALTIME = 0x0002
START_BUFFERED = 0x0003
START_MULTI_UNIT = 0x0004
RESET_THRESHOLD_LATCH = 0x0041
SET_SOFTWARE_BIAS = 0x0042

REQUEST = struct.Struct(">HHI")
RECORD = struct.Struct(">III6i")  # 36 bytes
SEQUENCE_MODULUS = 2**32
CALIBRATION_PAGE = "netftapi2.xml"

# SI value of one box unit (exact by definition: 1 lbf = 0.45359237 kg x 9.80665 m/s^2, 1 in = 0.0254 m).
LBF = 0.45359237 * 9.80665
FORCE_UNITS = {"n": 1.0, "kn": 1e3, "lbf": LBF, "klbf": 1e3 * LBF, "kgf": 9.80665, "gf": 9.80665e-3}
TORQUE_UNITS = {
    "nm": 1.0,
    "nmm": 1e-3,
    "knm": 1e3,
    "lbfin": LBF * 0.0254,
    "lbfft": LBF * 0.3048,
    "kgfcm": 9.80665e-2,
}


class NetFTError(RuntimeError):
    """The box cannot be used: no calibration, units msdp does not convert, an unresolvable address."""


class CalibrationError(NetFTError):
    pass


class MalformedRecord(ValueError):
    pass


# -- wire format ----------------------------------------------------------------------------------------------
class Record(NamedTuple):
    rdt_sequence: int
    ft_sequence: int
    status: int
    counts: tuple[int, int, int, int, int, int]  # Fx Fy Fz Tx Ty Tz


def request(command: int, samples: int = 0) -> bytes:
    """The 8-byte RDT request (``samples`` = 0: stream until stopped)."""
    return REQUEST.pack(RDT_HEADER, command, samples)


def parse_record(data: bytes) -> Record:
    """One real-time RDT record; MalformedRecord if the datagram is not exactly 36 bytes."""
    if len(data) != RECORD.size:
        raise MalformedRecord(f"RDT datagram of {len(data)} bytes (a record is {RECORD.size})")
    rdt, ft, status, *counts = RECORD.unpack(data)
    return Record(rdt, ft, status, tuple(counts))


def sequence_step(previous: int, current: int) -> int:
    """``current - previous`` on the uint32 circle, as a signed number in [-2^31, 2^31): 1 = the next record,
    k > 1 = k - 1 records lost (also across the wrap from 2^32 - 1 to 0), <= 0 = a duplicate, late or
    restarted sequence."""
    step = (current - previous) % SEQUENCE_MODULUS
    return step - SEQUENCE_MODULUS if step >= SEQUENCE_MODULUS // 2 else step


# -- calibration ------------------------------------------------------------------------------------------------
def _unit_key(unit: str) -> str:
    return "".join(c for c in unit.lower() if c.isalnum())


@dataclass(frozen=True)
class Calibration:
    """Counts per N and per Nm (the box's counts per unit converted to SI), and where they came from."""

    counts_per_newton: float
    counts_per_newton_metre: float
    source: str  # the calibration page's URL, or "parameters"
    box_units: str = "N, Nm"  # what the box reports in (for diagnostics)

    def wrench(self, counts: tuple[int, ...] | np.ndarray) -> np.ndarray:
        """Counts (Fx Fy Fz Tx Ty Tz) as N and Nm (float64)."""
        counts = np.asarray(counts, dtype=float)
        return np.concatenate([counts[:3] / self.counts_per_newton, counts[3:] / self.counts_per_newton_metre])

    def describe(self) -> str:
        return (
            f"{self.counts_per_newton:.10g} counts/N, {self.counts_per_newton_metre:.10g} counts/Nm "
            f"(box units {self.box_units}; from {self.source})"
        )


def parse_calibration(text: str | bytes, source: str) -> Calibration:
    """The counts per force and torque unit and the units from ``netftapi2.xml``, converted to counts per N / Nm.

    Units other than N and Nm are converted when the factor is exact (kN, lbf, klbf, kgf, gf; Nmm, kNm,
    lbf-in, lbf-ft, kgf-cm); any other unit is refused (CalibrationError naming it).
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise CalibrationError(f"{source}: not a Net F/T calibration page ({exc})") from None
    values: dict[str, str] = {}
    for name in ("cfgcpf", "cfgcpt", "scfgfu", "scfgtu"):
        element = root.find(f".//{name}")
        if element is None or not (element.text or "").strip():
            raise CalibrationError(f"{source}: no <{name}> element (is this a Net F/T box?)")
        values[name] = element.text.strip()
    counts = {}
    for name in ("cfgcpf", "cfgcpt"):
        try:
            counts[name] = float(values[name])
        except ValueError:
            counts[name] = math.nan
        if not (math.isfinite(counts[name]) and counts[name] > 0):
            raise CalibrationError(f"{source}: <{name}> is {values[name]!r}, expected a positive number")
    force_unit, torque_unit = values["scfgfu"], values["scfgtu"]
    force_si = FORCE_UNITS.get(_unit_key(force_unit))
    torque_si = TORQUE_UNITS.get(_unit_key(torque_unit))
    if force_si is None or torque_si is None:
        bad = f"force unit {force_unit!r}" if force_si is None else f"torque unit {torque_unit!r}"
        raise CalibrationError(
            f"{source}: {bad} is not one msdp converts (force: N, kN, lbf, klbf, kgf, gf; torque: Nm, Nmm, kNm, "
            "lbf-in, lbf-ft, kgf-cm); set the box to N and Nm, or give counts_per_force and counts_per_torque "
            "(counts per N and per Nm)"
        )
    return Calibration(
        counts_per_newton=counts["cfgcpf"] / force_si,
        counts_per_newton_metre=counts["cfgcpt"] / torque_si,
        source=source,
        box_units=f"{force_unit}, {torque_unit}",
    )


def calibration_url(host: str, http_port: int) -> str:
    return f"http://{host}{'' if http_port == 80 else f':{http_port}'}/{CALIBRATION_PAGE}"


def fetch_calibration(host: str, http_port: int = 80, timeout: float = 5.0) -> Calibration:
    """Read the box's calibration page (no proxy: the box is on the local network), trying again while it cannot
    be reached for up to ``timeout`` s (a box still booting, a virtual cell still starting); CalibrationError
    naming the URL if it cannot be read or parsed."""
    url = calibration_url(host, http_port)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with opener.open(url, timeout=max(0.1, deadline - time.monotonic())) as response:
                return parse_calibration(response.read(), url)
        except urllib.error.HTTPError as exc:
            raise CalibrationError(f"cannot read the calibration from {url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            if time.monotonic() >= deadline:
                reason = getattr(exc, "reason", exc)
                raise CalibrationError(
                    f"cannot read the calibration from {url} within {timeout:g} s: {reason} (is the box on?)"
                ) from None
            time.sleep(0.2)


def resolve_calibration(
    counts_per_force: float, counts_per_torque: float, fetch: Callable[[], Calibration]
) -> Calibration:
    """Counts per N and per Nm from the parameters where they are non-zero, from the box (``fetch``) otherwise."""
    if counts_per_force > 0 and counts_per_torque > 0:
        return Calibration(counts_per_force, counts_per_torque, "parameters")
    box = fetch()
    return Calibration(
        counts_per_force if counts_per_force > 0 else box.counts_per_newton,
        counts_per_torque if counts_per_torque > 0 else box.counts_per_newton_metre,
        box.source if counts_per_force == counts_per_torque == 0 else f"{box.source} and parameters",
        box.box_units,
    )


# -- the stream ---------------------------------------------------------------------------------------------
class Arrival(NamedTuple):
    record: Record
    time: float  # the stream's clock (monotonic) when it was read
    after_silence: bool  # the first record after a silence (or the very first): earlier state is stale


@dataclass
class StreamCounters:
    records: int = 0  # well-formed records received (any status)
    lost: int = 0  # gaps in the RDT sequence within a run of records (not across a silence)
    out_of_order: int = 0  # duplicate, late or restarted RDT sequence numbers
    malformed: int = 0  # datagrams that are not one 36-byte record (dropped)
    status_errors: int = 0  # records with a non-zero status word
    last_status: int = 0  # the newest non-zero status word
    socket_errors: int = 0  # failed sends or receives (e.g. ICMP port unreachable: nobody at the box's address)
    last_socket_error: str = ""
    start_requests: int = 0


class RdtStream:
    """The requester's side of one real-time RDT stream.

    The UDP socket is connected to the box, so the kernel passes on only the box's datagrams. ``receive`` waits
    for one datagram and counts it; while no record has come for ``timeout`` seconds the sensor is silent and
    the start request is sent again every ``timeout`` seconds (a box that was power-cycled or unplugged resumes).
    Lost packets are counted within a run of records; a silence starts a new run.
    """

    def __init__(
        self,
        host: str,
        port: int = RDT_PORT,
        timeout: float = 0.5,
        poll: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ):
        try:
            address = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)[0][4]
        except (socket.gaierror, UnicodeError) as exc:
            raise NetFTError(f"cannot resolve the Net F/T address {host!r}: {exc}") from None
        self.address = f"{address[0]}:{address[1]}"
        self.timeout = timeout
        self.clock = clock
        self.counters = StreamCounters()
        self.started_at = clock()
        self.last_record_at: float | None = None
        self.last_request_at = -math.inf
        self._previous_sequence: int | None = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(poll)
        try:
            self.sock.connect(address)
        except OSError as exc:
            self.sock.close()
            raise NetFTError(f"cannot open a UDP socket to the Net F/T box at {self.address}: {exc}") from None

    def send(self, command: int, samples: int = 0) -> bool:
        try:
            self.sock.send(request(command, samples))
            return True
        except OSError as exc:  # no route yet, or the ICMP error of an earlier datagram
            self.counters.socket_errors += 1
            self.counters.last_socket_error = str(exc)
            return False

    def start(self) -> None:
        self.last_request_at = self.clock()
        self.counters.start_requests += 1
        self.send(START_REALTIME)

    def stop(self) -> None:
        self.send(STOP)

    def silent_for(self, now: float | None = None) -> float:
        """Seconds since the last record (since the stream was opened if none came yet)."""
        now = self.clock() if now is None else now
        return now - (self.last_record_at if self.last_record_at is not None else self.started_at)

    def silent(self, now: float | None = None) -> bool:
        return self.silent_for(now) > self.timeout

    def receive(self) -> Arrival | None:
        """The next well-formed record (any status), or None after ``poll`` seconds without one."""
        now = self.clock()
        if self.silent(now) and now - self.last_request_at >= self.timeout:
            self.start()
        try:
            data = self.sock.recv(2048)
        except TimeoutError:
            return None
        except OSError as exc:
            self.counters.socket_errors += 1
            self.counters.last_socket_error = str(exc)
            return None
        now = self.clock()
        try:
            record = parse_record(data)
        except MalformedRecord:
            self.counters.malformed += 1
            return None
        after_silence = self.last_record_at is None or now - self.last_record_at > self.timeout
        if after_silence:
            self._previous_sequence = None
        if self._previous_sequence is not None:
            step = sequence_step(self._previous_sequence, record.rdt_sequence)
            if step > 0:
                self.counters.lost += step - 1
            else:
                self.counters.out_of_order += 1
        self._previous_sequence = record.rdt_sequence
        self.last_record_at = now
        self.counters.records += 1
        if record.status:
            self.counters.status_errors += 1
            self.counters.last_status = record.status
        return Arrival(record, now, after_silence)

    def close(self) -> None:
        self.sock.close()


# -- what the node does with the records ----------------------------------------------------------------------
class Decimator:
    """Averages readings (6 numbers each: counts, or N and Nm) to ``rate`` Hz (0: every reading passes through).

    Publish times are scheduled ``1/rate`` apart (so the mean rate is ``rate`` whatever the box's rate); a
    reading within half a period of the due time is published, so a box streaming at about ``rate`` has every
    record published despite jitter. Each output is the mean of the readings since the previous output. Plain
    Python sums: this runs for every record, thousands a second.
    """

    def __init__(self, rate: float):
        self.period = 1.0 / rate if rate > 0 else 0.0
        self.due: float | None = None
        self._sum = [0.0] * 6
        self._count = 0

    def add(self, t: float, reading: tuple[float, ...]) -> np.ndarray | None:
        self._sum = [a + b for a, b in zip(self._sum, reading, strict=True)]
        self._count += 1
        if self.period and self.due is not None and t < self.due - self.period / 2:
            return None
        mean = np.array(self._sum) / self._count
        self.clear()
        if self.due is None or t - self.due > self.period:  # the first reading, or late: schedule from now
            self.due = t + self.period
        else:
            self.due += self.period
        return mean

    def clear(self) -> None:
        """Forget the readings since the last output (after a silence they are stale)."""
        self._sum = [0.0] * 6
        self._count = 0


class TareWindow:
    """The last ``size`` healthy readings, whose mean becomes the software bias on request."""

    def __init__(self, size: int):
        self.readings: deque[tuple[float, ...]] = deque(maxlen=size)

    def add(self, reading: tuple[float, ...]) -> None:
        self.readings.append(reading)

    def clear(self) -> None:
        self.readings.clear()

    def mean(self) -> np.ndarray | None:
        """The mean of the window, or None until it is full."""
        if len(self.readings) < self.readings.maxlen:
            return None
        return np.mean(np.array(self.readings, dtype=float), axis=0)
