"""A Net F/T box on 127.0.0.1 for tests: the RDT protocol over UDP and the calibration page over HTTP.

Written from the protocol description (not from msdp's netft module, so a misreading is not shared): the box
listens on a UDP port for 8-byte big-endian requests (uint16 0x1234, uint16 command, uint32 sample count, 0 =
endless); a start (0x0002) makes it stream, from that port to the requester's address and port, one 36-byte
big-endian record per sample at its own rate (uint32 RDT sequence, uint32 F/T sequence, uint32 status, int32 Fx Fy
Fz Tx Ty Tz in counts = value x counts per unit); a stop (0x0000) ends the stream. ``GET /netftapi2.xml`` serves
``cfgcpf``, ``cfgcpt`` and the units ``scfgfu``, ``scfgtu``.

Knobs: ``set_wrench`` (in the box's units), ``status`` (the status word sent), ``drop_every`` (every k-th packet
is not sent: a gap in the RDT sequence), ``first_sequence`` (to cross the uint32 wrap-around), ``unplug``/``plug``
(a silent sensor: nothing is sent or heard; plugged in again, a box that was off has forgotten its client until it
asks again, one whose cable was out goes on streaming), ``send_raw`` (any datagram to the client), ``counts_fn``
(counts as a function of the RDT sequence). ``requests`` lists every request heard; with ``log_sends``,
``sent_at`` holds the send time (time.time) of each RDT sequence number.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REQUEST = struct.Struct(">HHI")
RECORD = struct.Struct(">III6i")
INT32 = (-(2**31), 2**31 - 1)


class NetFTPeer:
    def __init__(
        self,
        rate: float = 500.0,
        counts_per_force: float = 1_000_000,
        counts_per_torque: float = 1_000_000,
        force_unit: str = "N",
        torque_unit: str = "Nm",
        http: bool = True,
        first_sequence: int = 1,
        log_sends: bool = False,
        host: str = "127.0.0.1",
    ):
        self.rate = rate
        self.counts_per_force, self.counts_per_torque = counts_per_force, counts_per_torque
        self.force_unit, self.torque_unit = force_unit, torque_unit
        self.counts = [0] * 6
        self.counts_fn = None  # optional: rdt sequence -> counts (the bench encodes the sequence in the wrench)
        self.status = 0
        self.drop_every = 0
        self.rdt_sequence = first_sequence
        self.ft_sequence = 1
        self.requests: list[tuple[int, int]] = []  # (command, sample count) of every request heard
        self.sent = self.dropped = 0
        self.log_sends = log_sends
        self.sent_at: dict[int, float] = {}
        self._client: tuple[str, int] | None = None
        self._remaining = 0  # samples still owed; -1 = endless
        self._plugged = True
        self._lock = threading.Lock()
        self._running = True
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self._threads = [
            threading.Thread(target=self._listen, daemon=True, name="peer-requests"),
            threading.Thread(target=self._stream, daemon=True, name="peer-stream"),
        ]
        self.httpd = None
        self.http_port = None
        if http:
            self.httpd = ThreadingHTTPServer((host, 0), self._handler())
            self.httpd.daemon_threads = True
            self.http_port = self.httpd.server_address[1]
            self._threads.append(threading.Thread(target=self.httpd.serve_forever, daemon=True, name="peer-http"))
        for thread in self._threads:
            thread.start()

    # -- knobs ---------------------------------------------------------------------------------------
    def set_wrench(self, values: list[float]) -> None:
        """Fx Fy Fz (force unit) Tx Ty Tz (torque unit): the box sends round(value x counts per unit)."""
        scales = [self.counts_per_force] * 3 + [self.counts_per_torque] * 3
        counts = [min(max(round(v * s), INT32[0]), INT32[1]) for v, s in zip(values, scales, strict=True)]
        with self._lock:
            self.counts = counts

    def unplug(self, forget_client: bool = True) -> None:
        """Nothing is sent or heard. ``forget_client``: the box is off (streams again only when asked); else the
        cable is out and the box streams into the void (RDT sequence numbers go on)."""
        with self._lock:
            self._plugged = False
            if forget_client:
                self._client = None

    def plug(self) -> None:
        with self._lock:
            self._plugged = True

    @property
    def streaming(self) -> bool:
        return self._client is not None

    def send_raw(self, data: bytes) -> None:
        with self._lock:
            client = self._client
        if client is not None:
            self.sock.sendto(data, client)

    def calibration_xml(self) -> bytes:
        return (
            '<?xml version="1.0" encoding="ISO-8859-1"?>\n<netft>\n<setserial>FT-PEER</setserial>\n'
            f"<comrdtrate>{self.rate:g}</comrdtrate>\n<cfgcpf>{self.counts_per_force:g}</cfgcpf>\n"
            f"<cfgcpt>{self.counts_per_torque:g}</cfgcpt>\n<scfgfu>{self.force_unit}</scfgfu>\n"
            f"<scfgtu>{self.torque_unit}</scfgtu>\n</netft>\n"
        ).encode("latin-1")

    # -- the box -------------------------------------------------------------------------------------
    def _handler(self):
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.split("?")[0] != "/netftapi2.xml":
                    self.send_error(404)
                    return
                body = peer.calibration_xml()
                self.send_response(200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        return Handler

    def _listen(self) -> None:
        while self._running:
            try:
                data, address = self.sock.recvfrom(64)
            except (TimeoutError, OSError):
                continue
            if len(data) != REQUEST.size:
                continue
            header, command, count = REQUEST.unpack(data)
            with self._lock:
                if header != 0x1234 or not self._plugged:
                    continue
                self.requests.append((command, count))
                if command == 0x0002:
                    self._client, self._remaining = address, (count or -1)
                elif command == 0x0000:
                    self._client = None

    def _stream(self) -> None:
        period = 1.0 / self.rate
        due = time.perf_counter()
        while self._running:
            now = time.perf_counter()
            if now < due:
                time.sleep(min(due - now, 0.01))
                continue
            due = due + period if now - due < 0.05 else now + period  # no burst after a stall
            with self._lock:
                self.ft_sequence = (self.ft_sequence + 1) % 2**32  # the box samples whether or not anyone listens
                client = self._client
                if client is None or self._remaining == 0:
                    continue
                sequence = self.rdt_sequence
                self.rdt_sequence = (sequence + 1) % 2**32
                if self._remaining > 0:
                    self._remaining -= 1
                if not self._plugged or (self.drop_every and sequence % self.drop_every == 0):
                    self.dropped += 1
                    continue
                counts = self.counts_fn(sequence) if self.counts_fn else self.counts
                record = RECORD.pack(sequence, self.ft_sequence, self.status, *counts)
            if self.log_sends:
                self.sent_at[sequence] = time.time()
            try:
                self.sock.sendto(record, client)
            except OSError:
                continue  # nobody at the client's port (yet): the box keeps going
            self.sent += 1

    def close(self) -> None:
        self._running = False
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=2.0)
        self.sock.close()

    def __enter__(self) -> NetFTPeer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
