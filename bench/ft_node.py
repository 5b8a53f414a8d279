"""Bench: the Net F/T node against a Net F/T box on 127.0.0.1 (test/netft_peer.py), publish rate and latency.

The box streams at ``--box-rate`` (1 kHz) with Fx = the record's RDT sequence number and Fy = its square (counts,
1 count per N), so each wrench the node publishes -- the mean of consecutive records -- tells which records it
holds: the newest is b = mean(s) + (k - 1) / 2 with k = sqrt(12 (mean(s^2) - mean(s)^2) + 1). Latency is from the
box's send of that newest record to the wrench's arrival at a probe subscribed with sensor-data QoS (box, probe
and the clock they read are in this process; the node is its own process). Runs the node at ``rate`` 100 Hz (the
default) and at 0 (every record).

    .venv/bin/python bench/ft_node.py [--seconds 10] [--box-rate 1000]

Prints per run: wrenches/s, latency p50/p99/max (send -> probe, and send -> the node's receive stamp), the node's
CPU use; last line ``ft_latency_p50_ms: X`` for the 100 Hz run.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))  # the Net F/T peer and ROS helpers
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 200)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

from geometry_msgs.msg import WrenchStamped  # noqa: E402
from netft_peer import NetFTPeer  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402

from msdp.vocabulary import WRENCH, stamp_seconds  # noqa: E402
from ros_harness import Probe, node_process  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(rate: float, box_rate: float, seconds: float, log: Path) -> dict[str, float]:
    with NetFTPeer(rate=box_rate, counts_per_force=1, counts_per_torque=1, http=False, log_sends=True) as peer:
        peer.counts_fn = lambda s: [s, s * s, 0, 0, 0, 0]  # s < 46341 keeps s^2 an int32: 46 s at 1 kHz
        params = {"sensor_ip": "127.0.0.1", "port": peer.port, "counts_per_force": 1, "counts_per_torque": 1}
        received: list[tuple[float, float, float, float]] = []  # arrival, stamp, mean(s), mean(s^2)
        probe = Probe("ft_bench")
        probe.node.create_subscription(
            WrenchStamped,
            WRENCH.name,
            lambda m: received.append((time.time(), stamp_seconds(m.header), m.wrench.force.x, m.wrench.force.y)),
            qos_profile_sensor_data,
        )
        try:
            with node_process("msdp_perception.ft_node", {**params, "rate": rate}, log) as process:
                if not probe.spin_until(lambda: len(received) > 10, 30.0):
                    raise SystemExit(f"no wrench from the node: {log.read_text()[-2000:]}")
                probe.spin_for(1.0)  # warm-up
                received.clear()
                cpu, start = cpu_seconds(process.pid), time.monotonic()
                probe.spin_for(seconds)
                cpu, elapsed = cpu_seconds(process.pid) - cpu, time.monotonic() - start
        finally:
            probe.close()
    arrivals, stamps, m1, m2 = (np.array(c) for c in zip(*received, strict=True))
    k = np.sqrt(np.maximum(12.0 * (m2 - m1 * m1) + 1.0, 1.0))
    newest = np.rint(m1 + (k - 1.0) / 2.0).astype(np.int64)
    sent = np.array([peer.sent_at.get(int(s), np.nan) for s in newest])
    latency, to_node = (arrivals - sent) * 1e3, (stamps - sent) * 1e3
    ok = np.isfinite(latency)
    return {
        "wrenches_per_s": (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]),
        "records_per_wrench": float(np.mean(k)),
        "p50": float(np.percentile(latency[ok], 50)),
        "p99": float(np.percentile(latency[ok], 99)),
        "max": float(latency[ok].max()),
        "to_node_p50": float(np.percentile(to_node[ok], 50)),
        "unmatched": int((~ok).sum()),
        "cpu_percent": 100.0 * cpu / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--box-rate", type=float, default=1000.0, help="Hz, records the box streams")
    args = parser.parse_args()
    if args.box_rate * (args.seconds + 15) > 46_000:
        raise SystemExit("--box-rate x (--seconds + 15) must stay below 46,000 records (Fy = sequence^2 in int32)")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rate in (0.0, 100.0):
            r = results[rate] = run(rate, args.box_rate, args.seconds, Path(tmp) / f"ft_{rate:g}.log")
            label = f"rate {rate:g} Hz" if rate else "rate 0 (every record)"
            print(
                f"box {args.box_rate:g} Hz, node {label}: {r['wrenches_per_s']:.1f} wrenches/s "
                f"({r['records_per_wrench']:.1f} records each), latency send->probe p50 {r['p50']:.2f} ms "
                f"p99 {r['p99']:.2f} ms max {r['max']:.2f} ms, send->node stamp p50 {r['to_node_p50']:.3f} ms, "
                f"node CPU {r['cpu_percent']:.0f} % of a core, unmatched {r['unmatched']}"
            )
    print(f"ft_publish_rate_hz: {results[100.0]['wrenches_per_s']:.1f}")
    print(f"ft_latency_p50_ms: {results[100.0]['p50']:.2f}")


if __name__ == "__main__":
    main()
