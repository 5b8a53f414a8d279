"""rosbag2 writing and reading: round trips, a writer killed with SIGKILL, truncated and corrupt files."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.storage_mcap import McapReader

from msdp_perception.bags import TYPESTORE, BagError, BagReader, BagWriter, bag_topics, open_bag, recover_bag

String = TYPESTORE.types["std_msgs/msg/String"]
Header = TYPESTORE.types["std_msgs/msg/Header"]
Time = TYPESTORE.types["builtin_interfaces/msg/Time"]
Image = TYPESTORE.types["sensor_msgs/msg/Image"]


def payload(i: int) -> str:
    """Distinct, variable-length content per message, so a mixed-up or damaged message shows."""
    return f"msg {i}:" + "abcdefghij"[i % 10] * (i % 300)


def image(i: int) -> Image:
    pixels = np.random.default_rng(i).integers(0, 256, 8 * 8 * 3, dtype=np.uint8)
    header = Header(stamp=Time(sec=i, nanosec=0), frame_id="cam")
    return Image(header=header, height=8, width=8, encoding="rgb8", is_bigendian=0, step=24, data=pixels)


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
