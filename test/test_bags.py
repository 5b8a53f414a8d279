"""rosbag2 writing and reading: round trips, a writer killed with SIGKILL, truncated, corrupt and damaged files."""

import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib

import numpy as np
import pytest
from rosbags.rosbag2 import CompressionFormat, CompressionMode, Reader, StoragePlugin, Writer
from rosbags.rosbag2.storage_mcap import McapReader

from msdp.specs import ObservationSpec
from msdp_perception.bags import (
    TYPESTORE,
    BagDamaged,
    BagError,
    BagReader,
    BagWriter,
    bag_topics,
    open_bag,
    recover_bag,
)
from msdp_perception.dataset import BagDataset

String = TYPESTORE.types["std_msgs/msg/String"]
Header = TYPESTORE.types["std_msgs/msg/Header"]
Time = TYPESTORE.types["builtin_interfaces/msg/Time"]
Image = TYPESTORE.types["sensor_msgs/msg/Image"]
Vector3 = TYPESTORE.types["geometry_msgs/msg/Vector3"]
Wrench = TYPESTORE.types["geometry_msgs/msg/Wrench"]
WrenchStamped = TYPESTORE.types["geometry_msgs/msg/WrenchStamped"]


def payload(i: int) -> str:
    """Distinct, variable-length content per message, so a mixed-up or damaged message shows."""
    return f"msg {i}:" + "abcdefghij"[i % 10] * (i % 300)


def image(i: int, size: int = 8) -> Image:
    pixels = np.random.default_rng(i).integers(0, 256, size * size * 3, dtype=np.uint8)
    header = Header(stamp=Time(sec=i, nanosec=0), frame_id="cam")
    return Image(header=header, height=size, width=size, encoding="rgb8", is_bigendian=0, step=3 * size, data=pixels)


def wrench(i: int) -> WrenchStamped:
    force, torque = Vector3(x=float(i), y=1.0, z=2.0), Vector3(x=3.0, y=4.0, z=5.0)
    return WrenchStamped(header=Header(stamp=Time(sec=i, nanosec=0), frame_id="ft"), wrench=Wrench(force, torque))


def assert_sequence(messages: list, count: int) -> None:
    """Messages 0..count-1 of the /text topic, in order and intact."""
    assert len(messages) == count
    for i, (topic, msgtype, timestamp, msg) in enumerate(messages):
        assert (topic, msgtype, timestamp) == ("/text", "std_msgs/msg/String", 1_000_000 * i)
        assert msg.data == payload(i)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip(tmp_path, storage):
    path = tmp_path / "bag"
    with BagWriter(path, storage=storage) as writer:
        writer.add_topic("/text", "std_msgs/msg/String")
        writer.add_topic("/camera/image_raw", "sensor_msgs/msg/Image")
        writer.add_topic("/text", "std_msgs/msg/String")  # adding a topic twice is harmless
        for i in range(50):
            writer.write("/text", 1_000_000 * i, String(data=payload(i)))
            if i % 10 == 0:  # raw CDR bytes, as an rclpy raw subscription delivers them
                cdr = bytes(TYPESTORE.serialize_cdr(image(i), "sensor_msgs/msg/Image"))
                writer.write_raw("/camera/image_raw", 1_000_000 * i + 1, cdr)
    writer.close()  # idempotent
    assert writer.message_count == writer.flushed_message_count == 55
    assert sorted(p.suffix for p in path.iterdir()) == sorted([".yaml", ".mcap" if storage == "mcap" else ".db3"])

    messages = list(open_bag(path))
    assert_sequence([m for m in messages if m[0] == "/text"], 50)
    images = [m for m in messages if m[0] == "/camera/image_raw"]
    assert [m[2] for m in images] == [1_000_000 * i + 1 for i in range(0, 50, 10)]
    np.testing.assert_array_equal(images[2][3].data, image(20).data)
    assert [m[2] for m in messages] == sorted(m[2] for m in messages)
    assert bag_topics(path) == {"/text": "std_msgs/msg/String", "/camera/image_raw": "sensor_msgs/msg/Image"}

    with Reader(path) as reader:  # rosbags' own reader accepts metadata.yaml and the storage file
        assert reader.message_count == 55
        assert {t: i.msgcount for t, i in reader.topics.items()} == {"/text": 50, "/camera/image_raw": 5}
    with BagReader(path) as reader:
        assert not reader.needs_recovery
    assert recover_bag(path) == 55  # a complete bag is left as it is


def test_writer_rejects_bad_use(tmp_path):
    with pytest.raises(ValueError, match="storage 'rosbag1'"):
        BagWriter(tmp_path / "a", storage="rosbag1")
    with pytest.raises(BagError, match="exists already"):
        BagWriter(tmp_path)
    with BagWriter(tmp_path / "b") as writer:
        with pytest.raises(BagError, match="not a ROS 2 Kilted message type"):
            writer.add_topic("/x", "my_msgs/msg/Unknown")
        writer.add_topic("/text", "std_msgs/msg/String")
        with pytest.raises(BagError, match=r"topic /other was not added .*added: /text"):
            writer.write("/other", 0, String(data="x"))
        with pytest.raises(BagError, match="carries std_msgs/msg/String"):
            writer.write("/text", 0, image(0))
        with pytest.raises(BagError, match="was added as std_msgs/msg/String"):
            writer.add_topic("/text", "sensor_msgs/msg/Image")
    with pytest.raises(BagError, match="is closed"):
        writer.write("/text", 0, String(data="late"))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_quiet_writer_flushes_on_its_own_and_stays_readable(tmp_path, storage):
    path = tmp_path / "live"
    with BagWriter(path, storage=storage, flush_period=0.05) as writer:
        writer.add_topic("/text", "std_msgs/msg/String")
        for i in range(3):
            writer.write("/text", 1_000_000 * i, String(data=payload(i)))
        deadline = time.monotonic() + 5.0
        while writer.flushed_message_count < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writer.flushed_message_count == 3  # no further write was needed to get them on disk
        assert_sequence(list(open_bag(path)), 3)  # read while the writer is still open


CHILD = textwrap.dedent(
    """
    import sys
    from msdp_perception.bags import TYPESTORE, BagWriter
    from test_bags import payload
    String = TYPESTORE.types["std_msgs/msg/String"]
    writer = BagWriter(sys.argv[1], storage=sys.argv[2], flush_period=0.05)
    writer.add_topic("/text", "std_msgs/msg/String")
    reported, i = -1, 0
    while True:
        writer.write("/text", 1_000_000 * i, String(data=payload(i)))
        i += 1
        if writer.flushed_message_count != reported:
            reported = writer.flushed_message_count
            print(reported, flush=True)
    """
)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_writer_killed_with_sigkill(tmp_path, storage):
    path = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), *sys.path])}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), storage], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        flushed = [int(child.stdout.readline()) for _ in range(4)]  # 0 first, then three flushes
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    assert flushed[-1] > 0
    assert not (path / "metadata.yaml").exists()

    with BagReader(path) as reader:  # readable as it is, without recovery
        assert reader.needs_recovery
        messages = list(reader.messages())
    assert len(messages) >= flushed[-1]
    assert_sequence(messages, len(messages))

    assert recover_bag(path) == len(messages)
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ["metadata.yaml", f"killed.{'mcap' if storage == 'mcap' else 'db3'}"]
    )
    with Reader(path) as reader:
        assert reader.message_count == len(messages)
    with BagReader(path) as reader:
        assert not reader.needs_recovery
        assert_sequence(list(reader.messages()), len(messages))


def write_chunked(path, chunks: int, per_chunk: int) -> None:
    with BagWriter(path, flush_period=3600) as writer:
        writer.add_topic("/text", "std_msgs/msg/String")
        for i in range(chunks * per_chunk):
            writer.write("/text", 1_000_000 * i, String(data=payload(i)))
            if (i + 1) % per_chunk == 0:
                writer.flush()


def test_truncated_mcap_reads_its_complete_messages(tmp_path):
    whole = tmp_path / "whole"
    write_chunked(whole, chunks=5, per_chunk=40)
    size = (whole / "whole.mcap").stat().st_size
    mcap = McapReader(whole / "whole.mcap")
    mcap.open()
    last_chunk = mcap.chunks[-1].chunk_start_offset
    mcap.close()
    # cut into the footer, into the summary, into the last chunk
    for length, complete in ((size - 10, 200), (size - 600, 200), (last_chunk + 100, 160)):
        path = tmp_path / f"cut{length}"
        shutil.copytree(whole, path)
        os.truncate(path / "whole.mcap", length)
        with BagReader(path) as reader:
            assert reader.needs_recovery
            assert reader.message_counts == {"/text": complete}
        assert_sequence(list(open_bag(path)), complete)
        assert recover_bag(path) == complete
        with Reader(path) as reader:
            assert reader.message_count == complete


def test_corrupt_and_missing_bags_name_the_file(tmp_path):
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "garbage.mcap").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(BagError, match=r"garbage\.mcap is not an MCAP file"):
        list(open_bag(garbage))

    database = tmp_path / "database"
    write_chunked(database, chunks=1, per_chunk=5)
    shutil.rmtree(database)
    database.mkdir()
    (database / "database.db3").write_bytes(b"not a database" * 100)
    with pytest.raises(BagError, match=r"database\.db3"):
        bag_topics(database)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no bag here")
    with pytest.raises(BagError, match=r"empty is not a rosbag2 folder.*notes\.txt"):
        bag_topics(empty)
    with pytest.raises(BagError, match="does not exist"):
        bag_topics(tmp_path / "nowhere")
    with pytest.raises(BagError, match="is not a rosbag2 folder"):
        bag_topics(garbage / "garbage.mcap")

    broken_metadata = tmp_path / "meta"
    write_chunked(broken_metadata, chunks=1, per_chunk=5)
    (broken_metadata / "metadata.yaml").write_text("rosbag2_bagfile_information: [")
    with pytest.raises(BagError, match=r"meta.*metadata\.yaml"):
        bag_topics(broken_metadata)


# ------------------------------------------------------------------------------------- CRCs and damaged files

CHUNKS, IMAGES_PER_CHUNK, WRENCHES_PER_IMAGE = 4, 3, 3
PER_CHUNK = IMAGES_PER_CHUNK * (1 + WRENCHES_PER_IMAGE)


def write_sensor_bag(path, image_size: int = 16) -> None:
    """CHUNKS chunks of IMAGES_PER_CHUNK images, each followed by WRENCHES_PER_IMAGE wrenches; 1 message per 10 ms."""
    with BagWriter(path, flush_period=3600) as writer:
        writer.add_topic("/camera/image_raw", "sensor_msgs/msg/Image")
        writer.add_topic("/ft_sensor/wrench", "geometry_msgs/msg/WrenchStamped")
        writer.add_topic("/joint_states", "sensor_msgs/msg/JointState")  # none recorded: BagDataset masks them
        for i in range(CHUNKS * PER_CHUNK):
            t = 10_000_000 * i
            if i % (1 + WRENCHES_PER_IMAGE) == 0:
                msg = image(i, image_size)
                msg.header.stamp = Time(sec=0, nanosec=t)
                writer.write("/camera/image_raw", t, msg)
            else:
                msg = wrench(i)
                msg.header.stamp = Time(sec=0, nanosec=t)
                writer.write("/ft_sensor/wrench", t, msg)
            if (i + 1) % PER_CHUNK == 0:
                writer.flush()


def raw(path) -> list[tuple[str, int, bytes]]:
    with BagReader(path) as reader:
        return [(c.topic, t, bytes(data)) for c, t, data in reader.raw_messages()]


def assert_real_crcs(file) -> None:
    """Every chunk, the data section and the summary carry their CRC-32 (computed here from the MCAP layout)."""
    data = file.read_bytes()
    footer = len(data) - 37
    summary_start, _, summary_crc = struct.unpack_from("<QQI", data, footer + 9)
    assert summary_crc == zlib.crc32(data[summary_start : footer + 25]) != 0
    data_end = summary_start - 13
    assert data[data_end] == 0x0F  # the DataEnd record
    assert struct.unpack_from("<I", data, data_end + 9)[0] == zlib.crc32(data[:data_end]) != 0
    mcap = McapReader(file)
    mcap.open()
    chunks = list(mcap.chunks)
    mcap.close()
    assert chunks
    for chunk in chunks:
        assert chunk.compression == ""
        (crc,) = struct.unpack_from("<I", data, chunk.chunk_start_offset + 9 + 24)
        records = chunk.chunk_start_offset + 9 + 40
        assert crc == zlib.crc32(data[records : records + chunk.uncompressed_size]) != 0


def test_mcap_carries_real_crcs(tmp_path):
    path = tmp_path / "crc"
    write_sensor_bag(path)
    assert_real_crcs(path / "crc.mcap")
    with Reader(path) as reader:  # rosbags checks the chunk CRCs it finds
        assert len(list(reader.messages())) == CHUNKS * PER_CHUNK
    assert raw(path)[-1][1] == 10_000_000 * (CHUNKS * PER_CHUNK - 1)

    os.truncate(path / "crc.mcap", (path / "crc.mcap").stat().st_size - 100)  # into the summary
    assert recover_bag(path) == CHUNKS * PER_CHUNK
    assert_real_crcs(path / "crc.mcap")


def flip_byte_in_third_chunk(path) -> None:
    """Flip one pixel byte of the first image of the third chunk."""
    file = path / f"{path.name}.mcap"
    data = file.read_bytes()
    offset = data.index(image(2 * PER_CHUNK, 16).data.tobytes()) + 100
    file.write_bytes(data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :])


@pytest.mark.parametrize("summary", ["indexed", "cut off", "none"])
def test_a_flipped_byte_in_a_message_is_detected_after_the_messages_before_it(tmp_path, summary):
    path = tmp_path / "bag"
    write_sensor_bag(path)
    intact = raw(path)
    flip_byte_in_third_chunk(path)
    data = (path / "bag.mcap").read_bytes()
    if summary == "cut off":  # read by scanning, as a bag whose writer was killed
        (path / "bag.mcap").write_bytes(data[:-10])
    elif summary == "none":  # a valid MCAP: the summary is optional
        summary_start = struct.unpack_from("<Q", data, len(data) - 37 + 9)[0]
        (path / "bag.mcap").write_bytes(data[:summary_start] + struct.pack("<BQQQI", 0x02, 20, 0, 0, 0) + data[-8:])

    read = []
    with BagReader(path) as reader, pytest.raises(BagDamaged) as damaged:
        for c, t, data in reader.raw_messages():
            read.append((c.topic, t, bytes(data)))
    assert read == intact[: 2 * PER_CHUNK]  # the two intact chunks, nothing of the damaged one
    message = str(damaged.value)
    assert "\n" not in message
    assert message.startswith(f"{path / 'bag.mcap'}: chunk at byte ")
    assert "(messages from t=0.240 s to 0.350 s) fails its CRC check" in message
    assert message.endswith(f"the bag is damaged after t=0.240 s; {2 * PER_CHUNK} messages before it were read")
    assert (damaged.value.file, damaged.value.messages_read) == (path / "bag.mcap", 2 * PER_CHUNK)


def test_a_damaged_summary_is_not_trusted(tmp_path):
    """A flipped byte in the summary's copy of a topic name would hide that topic's messages; the file is scanned."""
    path = tmp_path / "bag"
    write_sensor_bag(path)
    intact = raw(path)
    data = (path / "bag.mcap").read_bytes()
    offset = data.rindex(b"/ft_sensor/wrench") + 5  # in the summary's channel record
    assert offset > struct.unpack_from("<Q", data, len(data) - 37 + 9)[0]
    (path / "bag.mcap").write_bytes(data[:offset] + b"X" + data[offset + 1 :])
    with BagReader(path) as reader:
        assert reader.problems == ["bag.mcap: its summary fails its CRC check"]
    assert raw(path) == intact
    assert recover_bag(path) == len(intact)
    assert_real_crcs(path / "bag.mcap")


def test_recover_bag_keeps_what_precedes_the_damage_and_the_damaged_file(tmp_path, caplog):
    path = tmp_path / "bag"
    write_sensor_bag(path)
    intact = raw(path)
    flip_byte_in_third_chunk(path)
    damaged = (path / "bag.mcap").read_bytes()
    with caplog.at_level(logging.WARNING):
        assert recover_bag(path) == 2 * PER_CHUNK

    assert sorted(p.name for p in path.iterdir()) == ["bag.mcap", "bag.mcap.damaged", "metadata.yaml"]
    assert (path / "bag.mcap.damaged").read_bytes() == damaged
    assert raw(path) == intact[: 2 * PER_CHUNK]
    assert_real_crcs(path / "bag.mcap")
    with Reader(path) as reader:
        assert reader.message_count == 2 * PER_CHUNK
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "damaged after" in r.message]
    assert len(warnings) == 1
    assert "fails its CRC check" in warnings[0] and "bag.mcap.damaged" in warnings[0]

    assert recover_bag(path) == 2 * PER_CHUNK  # now intact: left as it is
    assert (path / "bag.mcap.damaged").exists()


def test_dataset_keeps_the_samples_before_the_damage(tmp_path, caplog):
    path = tmp_path / "bag"
    write_sensor_bag(path)
    spec = ObservationSpec(image_size=16)
    intact = BagDataset([path], spec=spec, progress=False)
    assert len(intact) == CHUNKS * IMAGES_PER_CHUNK
    flip_byte_in_third_chunk(path)

    with caplog.at_level(logging.WARNING):
        damaged = BagDataset([path], spec=spec, progress=False)
    assert len(damaged) == 2 * IMAGES_PER_CHUNK
    for name in ("images", "wrench", "present", "stamps"):
        np.testing.assert_array_equal(getattr(damaged, name), getattr(intact, name)[: len(damaged)])
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.startswith(f"{path / 'bag.mcap'}: chunk at byte ")
    assert "damaged after t=0.240 s" in warning


def corruptions(size: int, trials: int):
    """Seeded (kind, offset, replacement bytes or new size): byte flips, garbage runs, truncations."""
    rng = np.random.default_rng(13)
    for trial in range(trials):
        offset = int(rng.integers(8, size - 1))
        if trial % 3 == 0:
            yield "flip", offset, bytes([int(rng.integers(1, 256))])
        elif trial % 3 == 1:
            yield "garbage", offset, rng.bytes(int(rng.integers(2, 64)))
        else:
            yield "truncate", offset, b""


def read_corrupted(path, data: bytes, kind: str, offset: int, replacement: bytes) -> tuple[list, BagError | None]:
    file = path / f"{path.name}.mcap"
    if kind == "flip":
        data = data[:offset] + bytes([data[offset] ^ replacement[0]]) + data[offset + 1 :]
    elif kind == "garbage":
        data = data[:offset] + replacement + data[offset + len(replacement) :]
    else:
        data = data[:offset]
    file.write_bytes(data)
    read: list = []
    try:
        with BagReader(path) as reader:
            for c, t, message in reader.raw_messages():
                read.append((c.topic, t, bytes(message)))
    except BagError as exc:
        assert str(file) in str(exc), str(exc)
        return read, exc
    return read, None


def test_random_corruption_ends_in_a_bag_error_naming_the_file(tmp_path, caplog):
    """Each corrupted file reads completely (a truncated one: up to the cut) or fails with a BagError naming the
    file; what it delivers is always the bag's messages in order, never altered ones."""
    caplog.set_level(logging.ERROR)  # not the warning for each bag that needs recovery
    path = tmp_path / "fuzz"
    write_sensor_bag(path, image_size=8)
    intact = raw(path)
    data = (path / "fuzz.mcap").read_bytes()
    outcomes = []
    for kind, offset, replacement in corruptions(len(data), 300):
        read, error = read_corrupted(path, data, kind, offset, replacement)
        assert read == intact[: len(read)], (kind, offset)
        if error is None and kind != "truncate":
            assert read == intact, (kind, offset)
        outcomes.append(type(error).__name__)
    assert {"NoneType", "BagDamaged", "BagError"} <= set(outcomes)


def test_random_corruption_of_a_bag_without_crcs_ends_in_a_bag_error(tmp_path, caplog):
    """rosbags writes CRCs of 0 and compresses chunks with zstd: damage may go unnoticed, but never crashes."""
    caplog.set_level(logging.ERROR)
    path = tmp_path / "plain"
    writer = Writer(path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with writer:
        connection = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=TYPESTORE)
        for i in range(12):
            writer.write(connection, i, TYPESTORE.serialize_cdr(image(i), "sensor_msgs/msg/Image"))
            if i % 4 == 3:
                writer.storage.close_chunk()
    data = (path / "plain.mcap").read_bytes()
    errors = [read_corrupted(path, data, *corruption)[1] for corruption in corruptions(len(data), 150)]
    assert any(errors) and not all(errors)
