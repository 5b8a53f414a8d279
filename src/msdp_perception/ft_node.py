"""F/T node: an ATI Net F/T box's RDT stream in, the wrist wrench out.

publishes   /ft_sensor/wrench (geometry_msgs/WrenchStamped, sensor-data QoS): force N, torque Nm in ``frame_id``,
            the mean of the healthy records received since the previous message, at ``rate`` Hz (0 = every record),
            stamped with the receive time (node clock) of the newest record in it, minus the software bias
            /diagnostics (1 Hz): records/s received, wrenches/s published, lost packets (gaps in the RDT sequence),
            malformed datagrams, the box's status word (hex) and a silent sensor
service     ~/bias (std_srvs/Trigger): software tare -- the mean of the last ``bias_samples`` healthy records
            is subtracted from every wrench from then on (for the node's lifetime)

Counts are divided by the counts per N and per Nm: the parameters, or where they are 0 the box's own
``netftapi2.xml`` (``cfgcpf``/``cfgcpt`` in the box's units, converted exactly or refused). An unreadable
calibration page stops the node at start (exit 1); a bad parameter too (exit 2).

Never a stale or made-up wrench: a record whose status word is non-zero (saturation, sensor error) is not
published (it is counted and its status reported as an error); when no record comes for ``timeout`` seconds the
sensor is silent -- nothing is published (the encoder masks F/T once its readings are too old), the silence is an
error on /diagnostics, and the start request is sent again every ``timeout`` seconds, so a box that comes back
resumes streaming. The readings gathered before a silence are dropped. Malformed datagrams are counted and
dropped. The bias is the node's (software tare, not the box's 0x0042 command), so it is visible in the
diagnostics and the box's own state is left alone. On shutdown the node sends the stop request (0x0000).

Records are read by a thread of their own (a box streams 1-7 kHz), which publishes; the executor serves the
bias service and the diagnostics.
"""

from __future__ import annotations

import ipaddress
import re
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from std_srvs.srv import Trigger

from msdp import vocabulary as vocab
from msdp.config import ConfigError, param_range
from msdp.node import MsdpNode, ros_message, run_node
from msdp_perception.netft import (
    RDT_PORT,
    Calibration,
    Decimator,
    NetFTError,
    RdtStream,
    StreamCounters,
    TareWindow,
    fetch_calibration,
    resolve_calibration,
)

NODE_NAME = "netft"
HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")


@dataclass(frozen=True)
class FtNodeConfig:
    sensor_ip: str = field(default="192.168.1.1", metadata={"doc": "the Net F/T box's address (IPv4 or host name)"})
    port: int = field(default=RDT_PORT, metadata=param_range(1, 65535, "UDP port of the box's RDT server"))
    http_port: int = field(default=80, metadata=param_range(1, 65535, "TCP port of the box's web server"))
    http_timeout: float = field(
        default=10.0, metadata=param_range(0.1, 120.0, "s to keep trying to read netftapi2.xml at start")
    )
    rate: float = field(
        default=100.0, metadata=param_range(0.0, 10000.0, "Hz, wrenches published (mean of the records); 0 = each")
    )
    counts_per_force: float = field(
        default=0.0, metadata=param_range(0.0, 1e12, "counts per N; 0 = the box's cfgcpf (netftapi2.xml)")
    )
    counts_per_torque: float = field(
        default=0.0, metadata=param_range(0.0, 1e12, "counts per Nm; 0 = the box's cfgcpt (netftapi2.xml)")
    )
    frame_id: str = field(default=vocab.FT_FRAME, metadata={"doc": "frame of the published wrench"})
    timeout: float = field(
        default=0.5, metadata=param_range(0.05, 60.0, "s without a record = silent sensor (start re-sent as often)")
    )
    bias_samples: int = field(default=100, metadata=param_range(1, 100000, "records averaged by ~/bias"))

    def check(self, prefix: str = "") -> None:
        try:
            ipaddress.IPv4Address(self.sensor_ip)
        except ValueError:
            if not HOSTNAME.fullmatch(self.sensor_ip) or self.sensor_ip.replace(".", "").isdigit():
                raise ConfigError(
                    f"parameter '{prefix}sensor_ip': {self.sensor_ip!r} is not an IPv4 address or host name"
                ) from None
        if not self.frame_id:
            raise ConfigError(f"parameter '{prefix}frame_id' must not be empty")


class FtNode(MsdpNode):
    def __init__(self):
        super().__init__(NODE_NAME, FtNodeConfig)
        c = self.config
        try:
            self.calibration: Calibration = resolve_calibration(
                c.counts_per_force,
                c.counts_per_torque,
                lambda: fetch_calibration(c.sensor_ip, c.http_port, c.http_timeout),
            )
            self.stream = RdtStream(c.sensor_ip, c.port, timeout=c.timeout)
        except NetFTError:
            super().destroy_node()
            raise
        self.decimator = Decimator(c.rate)
        self.tare_window = TareWindow(c.bias_samples)
        self.bias = np.zeros(6)
        self.published = 0
        self.exit_code: int | None = None
        self._lock = threading.Lock()  # the tare window, filled by the receiver thread, read by the service
        self._last_diagnostics = (time.monotonic(), StreamCounters(), 0)

        self.wrench_pub = self.publisher(vocab.WRENCH)
        self.create_service(Trigger, "~/bias", self.on_bias)
        self.create_timer(1.0, self.on_diagnostics)
        self.stream.start()
        self._running = True
        self._receiver = threading.Thread(target=self._receive_loop, name="netft-rdt", daemon=True)
        self._receiver.start()
        self.get_logger().info(
            f"streaming from the Net F/T box at {self.stream.address}: {self.calibration.describe()}, "
            f"publishing {vocab.WRENCH.name} at {f'{c.rate:g} Hz' if c.rate else 'every record'}"
        )

    # -- the receiver thread ------------------------------------------------------------------------
    def _receive_loop(self) -> None:
        try:
            while self._running:
                arrival = self.stream.receive()
                if arrival is not None:
                    self._on_record(arrival)
        except Exception as exc:  # a bug here must not leave a node that looks alive but publishes nothing
            self.get_logger().error(f"the RDT receiver stopped: {exc!r}")
            self.exit_code = 1

    def _on_record(self, arrival) -> None:
        """Counts are averaged and tared as counts (the conversion is linear), converted when published."""
        if arrival.after_silence:  # what was gathered before the silence is stale
            self.decimator.clear()
            with self._lock:
                self.tare_window.clear()
            self.get_logger().info(f"records from {self.stream.address} (RDT sequence {arrival.record.rdt_sequence})")
        if arrival.record.status:  # saturation or a sensor error: withheld, reported by the diagnostics
            return
        counts = arrival.record.counts
        with self._lock:
            self.tare_window.add(counts)
        mean = self.decimator.add(arrival.time, counts)
        if mean is not None:  # published as this record is read: its receive time
            wrench = self.calibration.wrench(mean) - self.bias
            self.wrench_pub.publish(vocab.wrench_msg(ros_message, self.now_ns(), wrench, self.config.frame_id))
            self.published += 1

    # -- executor side --------------------------------------------------------------------------------
    def on_bias(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.stream.silent():
            response.success = False
            response.message = f"no record for {self.stream.silent_for():.1f} s: cannot tare a silent sensor"
            return response
        with self._lock:
            counts = self.tare_window.mean()
            have = len(self.tare_window.readings)
        if counts is None:
            response.success = False
            response.message = (
                f"only {have} of {self.config.bias_samples} healthy records since the sensor (re)started; try again"
            )
            return response
        self.bias = bias = self.calibration.wrench(counts)
        response.success = True
        response.message = f"bias: mean of the last {self.config.bias_samples} records: {_format(bias)}"
        self.get_logger().info(response.message)
        return response

    def on_diagnostics(self) -> None:
        now = time.monotonic()
        counters, published = StreamCounters(**vars(self.stream.counters)), self.published
        then, before, published_before = self._last_diagnostics
        self._last_diagnostics = (now, counters, published)
        dt = max(now - then, 1e-6)
        new = {k: getattr(counters, k) - getattr(before, k) for k in ("lost", "out_of_order", "malformed")}
        new_status_errors = counters.status_errors - before.status_errors
        silent_for = self.stream.silent_for()
        errors, warnings = [], []
        if self.stream.silent():
            since = "" if self.stream.last_record_at is not None else " (none since start)"
            errors.append(
                f"no record for {silent_for:.1f} s{since} from {self.stream.address}; start request re-sent every "
                f"{self.config.timeout:g} s"
                + (f" ({counters.last_socket_error})" if counters.last_socket_error else "")
            )
            self.get_logger().error(errors[-1], throttle_duration_sec=5.0)
        if new_status_errors:
            errors.append(
                f"status 0x{counters.last_status:08x}: {new_status_errors} records withheld "
                "(saturation or sensor error)"
            )
            self.get_logger().error(errors[-1], throttle_duration_sec=5.0)
        if new["lost"]:
            warnings.append(f"{new['lost']} packets lost")
        if new["out_of_order"]:
            warnings.append(f"{new['out_of_order']} records out of sequence")
        if new["malformed"]:
            warnings.append(f"{new['malformed']} malformed datagrams dropped")
        records_per_s = (counters.records - before.records) / dt
        published_per_s = (published - published_before) / dt
        level = "error" if errors else "warn" if warnings else "ok"
        message = "; ".join(errors + warnings) or f"{records_per_s:.0f} records/s, {published_per_s:.1f} wrenches/s"
        values = {
            "sensor": self.stream.address,
            "records_per_s": f"{records_per_s:.1f}",
            "published_per_s": f"{published_per_s:.1f}",
            "records": str(counters.records),
            "published": str(published),
            "lost_packets": str(counters.lost),
            "out_of_order": str(counters.out_of_order),
            "malformed_datagrams": str(counters.malformed),
            "status_errors": str(counters.status_errors),
            "last_status": f"0x{counters.last_status:08x}",
            "silent_s": f"{silent_for:.3f}",
            "socket_errors": str(counters.socket_errors),
            "start_requests": str(counters.start_requests),
            "calibration": self.calibration.describe(),
            "bias": _format(self.bias),
        }
        self.publish_diagnostics("sensor", level, message, values)

    def destroy_node(self) -> None:
        self._running = False
        if self._receiver.is_alive():
            self._receiver.join(timeout=2.0)
        self.stream.stop()
        self.stream.close()
        super().destroy_node()


def _format(wrench: np.ndarray) -> str:
    names = ("fx", "fy", "fz", "tx", "ty", "tz")
    return ", ".join(f"{n}={v:.4g}" for n, v in zip(names, wrench, strict=True)) + " (N, Nm)"


def main(argv: list[str] | None = None) -> int:
    return run_node(NODE_NAME, FtNode, argv, startup_errors=(NetFTError,))


if __name__ == "__main__":
    sys.exit(main())
