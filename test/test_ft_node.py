"""The ATI Net F/T node against a Net F/T box on 127.0.0.1 (test/netft_peer.py: real UDP and HTTP), and the RDT
protocol core (msdp_perception.netft) on its own."""

import socket
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import WrenchStamped
from netft_peer import NetFTPeer
from rclpy.qos import qos_profile_sensor_data
from std_srvs.srv import Trigger

from msdp import vocabulary as vocab
from msdp.node import load_params_file
from msdp_perception import netft
from msdp_perception.ft_node import FtNodeConfig
from package_files import ROOT
from ros_harness import Probe, node_process

NODE = "msdp_perception.ft_node"
STATUS_NAME = "netft: sensor"


# -- the protocol core ---------------------------------------------------------------------------------------
def test_requests_are_eight_bytes_big_endian():
    assert netft.request(netft.START_REALTIME) == bytes.fromhex("1234 0002 00000000")
    assert netft.request(netft.STOP) == bytes.fromhex("1234 0000 00000000")
    assert netft.request(netft.SET_SOFTWARE_BIAS, 7) == bytes.fromhex("1234 0042 00000007")


def test_records_parse_and_any_other_length_is_malformed():
    data = struct.pack(">III6i", 2**32 - 1, 17, 0x80000000, 1, -2, 3, -(2**31), 2**31 - 1, 0)
    record = netft.parse_record(data)
    assert record == (2**32 - 1, 17, 0x80000000, (1, -2, 3, -(2**31), 2**31 - 1, 0))
    for size in (0, 8, 35, 37, 72):
        with pytest.raises(netft.MalformedRecord, match=f"{size} bytes"):
            netft.parse_record(bytes(size))


def test_sequence_steps_wrap_around_uint32():
    assert netft.sequence_step(2**32 - 1, 0) == 1  # the next record across the wrap
    assert netft.sequence_step(2**32 - 2, 2) == 4  # three lost across the wrap
    assert netft.sequence_step(41, 42) == 1
    assert netft.sequence_step(5, 5) == 0  # duplicate
    assert netft.sequence_step(5, 3) == -2  # late
    assert netft.sequence_step(3, 2**32 - 1) == -4  # late, across the wrap
    assert netft.sequence_step(90_000, 1) < 0  # restarted


def xml(cpf="1000000", cpt="1000000", fu="N", tu="Nm", extra=""):
    return f"<netft><setserial>FT1</setserial>{extra}<cfgcpf>{cpf}</cfgcpf><cfgcpt>{cpt}</cfgcpt><scfgfu>{fu}</scfgfu><scfgtu>{tu}</scfgtu></netft>"  # noqa: E501


def test_the_calibration_page_gives_counts_per_newton_and_newton_metre():
    cal = netft.parse_calibration(xml("1000000", "2000000"), "box")
    np.testing.assert_allclose(
        cal.wrench([1_000_000, -500_000, 0, 2_000_000, 1, -4_000_000]), [1, -0.5, 0, 1, 5e-7, -2]
    )
    # imperial and scaled units, by their exact factors: 1 lbf = 4.4482216152605 N, 1 lbf-in = 0.112984829... Nm
    cal = netft.parse_calibration(xml("1000", "500", "lbf", "lbf-in"), "box")
    np.testing.assert_allclose(cal.wrench([1000, 0, 0, 500, 0, 0])[[0, 3]], [4.4482216152605, 0.1129848290276167])
    cal = netft.parse_calibration(xml("10", "10", "kN", "Nmm"), "box")
    np.testing.assert_allclose(cal.wrench([10, 0, 0, 10, 0, 0])[[0, 3]], [1000.0, 0.001])


@pytest.mark.parametrize(
    "page, message",
    [
        (xml(fu="furlong"), "force unit 'furlong' is not one msdp converts"),
        (xml(tu="ozf-in"), "torque unit 'ozf-in' is not one msdp converts"),
        (xml(cpf="0"), "<cfgcpf> is '0', expected a positive number"),
        (xml(cpt="many"), "<cfgcpt> is 'many'"),
        ("<netft><cfgcpf>1</cfgcpf></netft>", "no <cfgcpt> element"),
        ("<html>not found", "not a Net F/T calibration page"),
    ],
)
def test_a_bad_calibration_page_is_refused_naming_it(page, message):
    with pytest.raises(netft.CalibrationError, match="^http://box/netftapi2.xml: .*" + message.replace("(", r"\(")):
        netft.parse_calibration(page, "http://box/netftapi2.xml")


def test_parameters_take_precedence_and_zero_reads_the_box():
    box = netft.Calibration(1000.0, 2000.0, "http://box", "N, Nm")
    assert netft.resolve_calibration(5.0, 6.0, lambda: pytest.fail("no fetch")).counts_per_newton == 5.0
    mixed = netft.resolve_calibration(5.0, 0.0, lambda: box)
    assert (mixed.counts_per_newton, mixed.counts_per_newton_metre) == (5.0, 2000.0)
    assert netft.resolve_calibration(0.0, 0.0, lambda: box) == box


def test_the_decimator_averages_to_its_rate_and_passes_a_box_at_that_rate_unchanged():
    decimator, out = netft.Decimator(100.0), []
    for i in range(1000):  # 1 s of a 1 kHz box whose fx counts up
        mean = decimator.add(i * 1e-3, np.full(6, float(i)))
        if mean is not None:
            out.append((i, mean[0]))
    assert 99 <= len(out) <= 101
    for (before, _), (i, mean) in zip(out, out[1:], strict=False):
        assert mean == pytest.approx((before + 1 + i) / 2)  # the mean of the records since the last output
    rng = np.random.default_rng(0)
    decimator = netft.Decimator(100.0)  # a 100 Hz box with 3 ms of jitter: every record goes out
    assert all(decimator.add(i * 0.01 + rng.uniform(-3e-3, 3e-3), np.ones(6)) is not None for i in range(300))
    decimator = netft.Decimator(0.0)
    assert all(decimator.add(i * 1e-4, np.ones(6)) is not None for i in range(100))


def test_the_stream_counts_gaps_across_the_wrap_malformed_datagrams_and_resumes_after_a_silence():
    with NetFTPeer(rate=1000.0, first_sequence=2**32 - 100, http=False) as peer:
        peer.drop_every = 20
        stream = netft.RdtStream("127.0.0.1", peer.port, timeout=0.2)
        try:
            stream.start()
            arrivals = []
            deadline = time.monotonic() + 10
            while len(arrivals) < 300 and time.monotonic() < deadline:
                arrival = stream.receive()
                if arrival is not None:
                    arrivals.append(arrival)
            assert len(arrivals) == 300
            sequences = [a.record.rdt_sequence for a in arrivals]
            assert sequences[0] > sequences[-1], "the run should cross the uint32 wrap-around"
            expected_lost = sum(netft.sequence_step(a, b) - 1 for a, b in zip(sequences, sequences[1:], strict=False))
            assert stream.counters.lost == expected_lost > 0
            assert stream.counters.out_of_order == 0
            assert [a.after_silence for a in arrivals[:2]] == [True, False]

            for size in (35, 37, 0):
                peer.send_raw(bytes(size))
            while stream.counters.malformed < 3 and time.monotonic() < deadline:
                stream.receive()
            assert stream.counters.malformed == 3

            lost, dropped = stream.counters.lost, peer.dropped
            peer.unplug(forget_client=False)  # the cable is out: silent, the box's sequence goes on
            read_for(stream, 0.4)
            peer.plug()
            arrival = None
            while arrival is None and time.monotonic() < deadline + 5:
                arrival = stream.receive()
            assert arrival is not None and arrival.after_silence
            assert peer.dropped > dropped + 100 and stream.counters.lost == lost  # a silence is not lost packets

            peer.unplug()  # the box is off; on again, it streams only when asked again
            read_for(stream, 0.3)
            peer.plug()
            requests = stream.counters.start_requests
            arrival = None
            while arrival is None and time.monotonic() < deadline + 5:
                arrival = stream.receive()
            assert arrival is not None and arrival.after_silence
            assert stream.counters.start_requests > requests
        finally:
            stream.stop()
            stream.close()


def read_for(stream: netft.RdtStream, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        stream.receive()


def test_the_shipped_config_validates():
    config = load_params_file(FtNodeConfig, ROOT / "config" / "ft.yaml", "netft")
    assert config == FtNodeConfig()
    assert config.frame_id == vocab.FT_FRAME and config.port == netft.RDT_PORT


# -- the node ------------------------------------------------------------------------------------------------
class Listener:
    """A probe subscribed to the wrench and the node's diagnostics."""

    def __init__(self):
        self.probe = Probe()
        self.wrenches: list[tuple[float, WrenchStamped]] = []  # (arrival time.time(), message)
        self.statuses = []
        node = self.probe.node
        node.create_subscription(
            WrenchStamped, vocab.WRENCH.name, lambda m: self.wrenches.append((time.time(), m)), qos_profile_sensor_data
        )
        node.create_subscription(
            DiagnosticArray,
            vocab.DIAGNOSTICS.name,
            lambda m: self.statuses.extend(s for s in m.status if s.name == STATUS_NAME),
            10,
        )

    def wait_for(self, condition, timeout, log):
        assert self.probe.spin_until(condition, timeout), log.read_text()[-3000:]

    def status_where(self, predicate):
        return next((s for s in reversed(self.statuses) if predicate(s)), None)

    def latest(self, n: int) -> np.ndarray:
        return np.array([vocab.wrench_array(m) for _, m in self.wrenches[-n:]], dtype=float)


def values(status) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


@pytest.mark.ros
def test_wrenches_from_the_box_calibration_at_the_rate_then_tared_and_the_stream_stopped(tmp_path):
    log = tmp_path / "ft.log"
    with NetFTPeer(rate=500.0, counts_per_force=1_000_000, counts_per_torque=2_000_000) as peer:
        peer.set_wrench([1.5, -2.0, 10.0, 0.1, -0.2, 0.3])
        params = {"sensor_ip": "127.0.0.1", "port": peer.port, "http_port": peer.http_port, "rate": 100.0}
        listener = Listener()
        try:
            with node_process(NODE, params, log) as process:
                listener.wait_for(lambda: len(listener.wrenches) >= 150, 20, log)
                received = listener.latest(150)
                np.testing.assert_allclose(received, np.tile([1.5, -2.0, 10.0, 0.1, -0.2, 0.3], (150, 1)), atol=1e-6)
                arrivals = [(t, m) for t, m in listener.wrenches[-150:]]
                assert {m.header.frame_id for _, m in arrivals} == {vocab.FT_FRAME}
                stamps = np.array([vocab.stamp_seconds(m.header) for _, m in arrivals])
                assert np.all(np.diff(stamps) > 0)
                # stamped at receive time on the node's clock (wall time here), so just before the probe got it
                assert np.all(stamps <= np.array([t for t, _ in arrivals]) + 1e-3)
                assert np.median(np.array([t for t, _ in arrivals]) - stamps) < 0.05
                rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
                assert 85 <= rate <= 105, f"published at {rate:.1f} Hz, expected 100"

                client = listener.probe.node.create_client(Trigger, "/netft/bias")
                listener.wait_for(client.service_is_ready, 10, log)
                future = client.call_async(Trigger.Request())
                listener.wait_for(future.done, 10, log)
                assert future.result().success, future.result().message
                assert "fx=1.5" in future.result().message
                answered = time.time()
                listener.wait_for(lambda: sum(t > answered + 0.05 for t, _ in listener.wrenches) >= 10, 10, log)
                np.testing.assert_allclose(listener.latest(10), 0.0, atol=1e-6)

                peer.set_wrench([2.0, -2.0, 4.0, 0.1, -0.2, 0.0])  # after the tare: the change
                changed = time.time()
                listener.wait_for(lambda: sum(t > changed + 0.05 for t, _ in listener.wrenches) >= 10, 10, log)
                np.testing.assert_allclose(listener.latest(10), np.tile([0.5, 0, -6.0, 0, 0, -0.3], (10, 1)), atol=1e-6)

                listener.wait_for(lambda: listener.statuses, 5, log)
                status = listener.statuses[-1]
                assert status.level == DiagnosticStatus.OK and "records/s" in status.message, status.message
                assert "1000000 counts/N, 2000000 counts/Nm" in values(status)["calibration"]
                assert 400 < float(values(status)["records_per_s"]) < 600
                assert peer.requests[0] == (netft.START_REALTIME, 0)
            assert process.returncode == 0, log.read_text()[-3000:]
            assert peer.requests[-1] == (netft.STOP, 0), peer.requests
            assert not peer.streaming
        finally:
            listener.probe.close()


@pytest.mark.ros
def test_lost_packets_status_errors_and_a_silent_sensor_are_reported_and_nothing_stale_is_published(tmp_path):
    """Counts per unit from the parameters (the box has no web server here), a custom frame, gaps across the
    uint32 wrap-around, malformed datagrams; a non-zero status and a silence each stop the wrenches until they end."""
    log = tmp_path / "ft.log"
    wraps_in_a_second = 2**32 - 400
    with NetFTPeer(500.0, 2000, 50_000, http=False, first_sequence=wraps_in_a_second) as peer:
        peer.drop_every = 25
        peer.set_wrench([-3.0, 0.5, 0.0, 0.02, 0.0, -0.1])
        params = {
            "sensor_ip": "localhost",
            "port": peer.port,
            "http_port": 9,  # nobody there: with both counts given the node never asks
            "counts_per_force": 2000,
            "counts_per_torque": 50_000.0,
            "frame_id": "tool_ft",
            "timeout": 0.3,
            "rate": 50.0,
        }
        listener = Listener()
        errors = DiagnosticStatus.ERROR
        try:
            with node_process(NODE, params, log):
                listener.wait_for(lambda: len(listener.wrenches) >= 20, 20, log)
                np.testing.assert_allclose(listener.latest(20), np.tile([-3.0, 0.5, 0, 0.02, 0, -0.1], (20, 1)))
                assert {m.header.frame_id for _, m in listener.wrenches} == {"tool_ft"}
                for size in (35, 72):
                    peer.send_raw(bytes(size))

                def counted(s):
                    v = values(s)
                    return int(v["lost_packets"]) >= 10 and int(v["malformed_datagrams"]) == 2

                listener.wait_for(lambda: listener.status_where(counted), 10, log)
                status = listener.status_where(counted)
                assert 10 <= int(values(status)["lost_packets"]) <= peer.dropped  # a wrap miscount would be ~4e9
                assert values(status)["out_of_order"] == "0"
                assert peer.rdt_sequence < 2**31, "the stream should have crossed the wrap-around"
                assert "calibration" in values(status) and "parameters" in values(status)["calibration"]

                peer.status = 0x20000001  # e.g. saturation
                listener.wait_for(lambda: listener.status_where(lambda s: "0x20000001" in s.message), 10, log)
                status = listener.status_where(lambda s: "0x20000001" in s.message)
                assert status.level == errors and "withheld" in status.message
                assert values(status)["last_status"] == "0x20000001"
                listener.wrenches.clear()
                listener.probe.spin_for(0.5)
                assert not listener.wrenches, "records with a non-zero status word must not be published"
                peer.status = 0
                listener.wait_for(lambda: len(listener.wrenches) >= 5, 10, log)

                time.sleep(0.01)  # half a publish period: the node holds readings it has not published yet
                peer.unplug()
                listener.wait_for(lambda: listener.status_where(lambda s: "no record for" in s.message), 10, log)
                status = listener.status_where(lambda s: "no record for" in s.message)
                assert status.level == errors and float(values(status)["silent_s"]) > 0.3
                listener.wrenches.clear()
                client = listener.probe.node.create_client(Trigger, "/netft/bias")
                future = client.call_async(Trigger.Request())
                listener.wait_for(future.done, 10, log)
                assert not future.result().success and "cannot tare a silent sensor" in future.result().message
                listener.probe.spin_for(1.0)
                assert not listener.wrenches, "a silent sensor must not have wrenches published for it"
                starts = sum(1 for command, _ in peer.requests if command == netft.START_REALTIME)

                peer.set_wrench([1.0, 0, 0, 0, 0, 0])
                peer.plug()  # the box is back but has forgotten its client: the node must ask again
                listener.wait_for(lambda: len(listener.wrenches) >= 10, 10, log)
                assert sum(1 for command, _ in peer.requests if command == netft.START_REALTIME) > starts
                after = listener.latest(len(listener.wrenches))  # none mixes in readings from before the silence
                np.testing.assert_allclose(after, np.tile([1.0, 0, 0, 0, 0, 0], (len(after), 1)))
                before = len(listener.statuses)
                listener.wait_for(lambda: len(listener.statuses) > before + 1, 5, log)
                assert listener.statuses[-1].level != errors, listener.statuses[-1].message
        finally:
            listener.probe.close()


def run_node(*params: str, timeout: float = 30) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", NODE, "--ros-args"]
    for param in params:
        args += ["-p", param]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def assert_one_line(result: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code and len(lines) == 1, result.stderr
    assert all(f in lines[0] for f in fragments), lines[0]
    return lines[0]


@pytest.mark.ros
@pytest.mark.parametrize(
    "param, fragments",
    [
        ("sensor_adress:=127.0.0.1", ("unknown parameter(s) 'sensor_adress'",)),
        ("rate:=-5.0", ("parameter 'rate': -5.0 is outside the allowed range",)),
        ("counts_per_force:=lots", ("parameter 'counts_per_force': expected a number",)),
        ("sensor_ip:=http://192.168.1.1/", ("parameter 'sensor_ip'", "not an IPv4 address or host name")),
    ],
)
def test_a_bad_parameter_stops_the_node_with_one_line(param, fragments):
    assert_one_line(run_node(param), 2, "netft: invalid parameter:", *fragments)


@pytest.mark.ros
def test_an_unreachable_box_or_units_it_cannot_convert_stop_the_node_with_one_line():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    started = time.monotonic()
    result = run_node("sensor_ip:=127.0.0.1", f"http_port:={closed}", "http_timeout:=1.5")
    assert_one_line(result, 1, f"cannot read the calibration from http://127.0.0.1:{closed}/netftapi2.xml within 1.5 s")
    assert time.monotonic() - started > 1.5  # it kept trying (a box still booting) for http_timeout
    with NetFTPeer(force_unit="kip") as peer:
        result = run_node("sensor_ip:=127.0.0.1", f"http_port:={peer.http_port}", f"port:={peer.port}")
    assert_one_line(result, 1, "netft: cannot start:", "force unit 'kip' is not one msdp converts")
    assert not peer.requests, "a node that cannot read the box's counts must not start it streaming"
