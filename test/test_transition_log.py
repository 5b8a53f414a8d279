"""The transition log: round trip, a reader following a live writer, kill -9 of the writer, torn tails, corruption
(before the tail, and of the last record)."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

from msdp_policy.transition_log import (
    HEADER,
    LOG_FILE,
    CorruptRecordWarning,
    Schema,
    TransitionLogError,
    TransitionReader,
    TransitionWriter,
)

SCHEMA = Schema(
    {"tokens": ("float16", (67, 8)), "action": ("float32", (4,)), "reward": ("float32", ()), "done": ("bool", ())}
)


def transition(i: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(i)
    return {
        "tokens": rng.normal(size=(67, 8)).astype(np.float16),
        "action": rng.uniform(-1, 1, 4).astype(np.float32),
        "reward": np.float32(i),
        "done": np.bool_(i % 7 == 6),
    }


def test_round_trip_and_a_reader_following_the_writer(tmp_path):
    with TransitionWriter(tmp_path, SCHEMA, durable=False) as writer:
        reader = TransitionReader(tmp_path)
        assert len(reader) == 0
        for i in range(5):
            assert writer.append(transition(i)) == i
        assert reader.refresh() == 5
        for i in range(5, 3000):  # past the reader's first buffer size
            writer.append(transition(i))
        assert reader.refresh() == 2995 and reader.refresh() == 0
    arrays = reader.arrays
    np.testing.assert_array_equal(arrays["reward"], np.arange(3000, dtype=np.float32))
    np.testing.assert_array_equal(arrays["tokens"][1234], transition(1234)["tokens"])
    np.testing.assert_array_equal(arrays["done"], np.arange(3000) % 7 == 6)
    assert len(TransitionReader(tmp_path)) == 3000


def test_a_restarted_writer_resumes_and_drops_a_torn_tail(tmp_path):
    with TransitionWriter(tmp_path, SCHEMA) as writer:
        for i in range(10):
            writer.append(transition(i))
    with open(tmp_path / LOG_FILE, "ab") as f:  # a record cut short, as a kill in the middle of a write leaves
        f.write(b"MSDT\x00\x01\x02")
    reader = TransitionReader(tmp_path)
    assert len(reader) == 10  # a reader stops before the torn record
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a torn tail is what a kill leaves: dropped without a warning
        writer = TransitionWriter(tmp_path, SCHEMA)
    with writer:
        assert writer.count == 10 and writer.dropped_bytes == 7 and writer.dropped_records == 0
        assert writer.append(transition(10)) == 10
    assert reader.refresh() == 1
    np.testing.assert_array_equal(reader.arrays["reward"], np.arange(11, dtype=np.float32))


def test_corruption_before_the_tail_and_a_changed_schema_are_refused(tmp_path):
    with TransitionWriter(tmp_path, SCHEMA) as writer:
        for i in range(4):
            writer.append(transition(i))
    data = bytearray((tmp_path / LOG_FILE).read_bytes())
    data[20] ^= 0xFF  # a flipped byte inside the first record's payload
    (tmp_path / LOG_FILE).write_bytes(bytes(data))
    with pytest.raises(TransitionLogError, match="corrupt record 0 at byte 0"):
        TransitionReader(tmp_path)
    other = Schema({"tokens": ("float32", (67, 8))})
    with pytest.raises(TransitionLogError, match="schema.json"):
        TransitionWriter(tmp_path, other)
    with pytest.raises(TransitionLogError, match="not a transition log"):
        TransitionReader(tmp_path / "nowhere")


def test_a_corrupt_last_record_is_dropped_by_the_writer_with_a_warning(tmp_path):
    step = HEADER.size + SCHEMA.record_size
    with TransitionWriter(tmp_path, SCHEMA) as writer:
        for i in range(4):
            writer.append(transition(i))
    data = bytearray((tmp_path / LOG_FILE).read_bytes())
    data[-1] ^= 0xFF  # the last record is all there, but its checksum fails: not a torn write
    (tmp_path / LOG_FILE).write_bytes(bytes(data))
    reader = TransitionReader(tmp_path)
    assert len(reader) == 3  # it may be in flight to a reader: not read, and not skipped either
    with pytest.warns(CorruptRecordWarning, match=f"{LOG_FILE}: dropped corrupt last record 3 at byte {3 * step} "):
        writer = TransitionWriter(tmp_path, SCHEMA)
    with writer:
        assert writer.count == 3 and writer.dropped_records == 1 and writer.dropped_bytes == step
        assert writer.append(transition(9)) == 3
    assert reader.refresh() == 1
    np.testing.assert_array_equal(reader.arrays["reward"], [0, 1, 2, 9])


def test_corruption_found_by_a_later_refresh_is_reported_at_its_place_in_the_file(tmp_path):
    step = HEADER.size + SCHEMA.record_size
    with TransitionWriter(tmp_path, SCHEMA) as writer:
        for i in range(4):
            writer.append(transition(i))
        reader = TransitionReader(tmp_path)
        for i in range(4, 6):
            writer.append(transition(i))
    data = bytearray((tmp_path / LOG_FILE).read_bytes())
    data[4 * step + 20] ^= 0xFF  # inside record 4, the first one the reader has not read yet
    (tmp_path / LOG_FILE).write_bytes(bytes(data))
    with pytest.raises(TransitionLogError, match=f"corrupt record 4 at byte {4 * step} "):
        reader.refresh()


def test_bad_transitions_are_refused_before_anything_is_written(tmp_path):
    with TransitionWriter(tmp_path, SCHEMA) as writer:
        with pytest.raises(ValueError, match="shape"):
            writer.append({**transition(0), "action": np.zeros(3)})
        with pytest.raises(ValueError, match="missing"):
            writer.append({"action": np.zeros(4)})
    assert (tmp_path / LOG_FILE).stat().st_size == 0


def test_kill_9_of_the_writer_loses_at_most_the_step_in_flight(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_transition_log import SCHEMA, transition
        from msdp_policy.transition_log import TransitionWriter
        writer = TransitionWriter({str(tmp_path)!r}, SCHEMA, durable=True)
        i = 0
        while True:
            writer.append(transition(i))
            print(i, flush=True)  # acknowledged: this step is on disk
            i += 1
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    acknowledged = -1
    deadline = time.monotonic() + 30
    while acknowledged < 200 and time.monotonic() < deadline:
        acknowledged = int(child.stdout.readline())
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    acknowledged = max([acknowledged, *(int(line) for line in child.stdout.read().split())])
    writer = TransitionWriter(tmp_path, SCHEMA)
    assert acknowledged + 1 <= writer.count <= acknowledged + 2  # every acknowledged step, plus the one in flight
    np.testing.assert_array_equal(
        TransitionReader(tmp_path).arrays["reward"], np.arange(writer.count, dtype=np.float32)
    )
    writer.close()


FLAGGED = Schema({**SCHEMA.fields, "intervention": ("bool", ())})  # the layout since interventions are logged


def test_intervention_flags_round_trip_and_a_record_without_one_is_written_false(tmp_path):
    with TransitionWriter(tmp_path, FLAGGED, durable=False) as writer:
        for i in range(6):
            writer.append({**transition(i), "intervention": np.bool_(i in (2, 3))})
        writer.append(transition(6))  # a writer that does not know the flag
    np.testing.assert_array_equal(TransitionReader(tmp_path).arrays["intervention"], [0, 0, 1, 1, 0, 0, 0])


def test_a_log_from_before_interventions_reads_as_all_false_and_mixes_with_a_new_one(tmp_path):
    with TransitionWriter(tmp_path / "old", SCHEMA, durable=False) as writer:
        for i in range(5):
            writer.append(transition(i))
        reader = TransitionReader(tmp_path / "old")
        for i in range(5, 1500):  # the flag's zeros grow with the log's arrays
            writer.append(transition(i))
        assert reader.refresh() == 1495
    arrays = reader.arrays
    assert arrays["intervention"].shape == (1500,) and not arrays["intervention"].any()
    np.testing.assert_array_equal(arrays["reward"], np.arange(1500, dtype=np.float32))
    assert reader.schema.fields == SCHEMA.fields  # what the file holds is unchanged
    TransitionWriter(tmp_path / "new", FLAGGED).close()
    new = TransitionReader(tmp_path / "new")
    reader.schema.check_same_source(new.schema, "old", "new")  # both ways: RLPD may have either one online
    new.schema.check_same_source(reader.schema, "new", "old")


def test_logs_differing_in_more_than_the_intervention_flag_are_not_mixed_nor_appended_to(tmp_path):
    other_action = Schema({**SCHEMA.fields, "action": ("float32", (3,))})
    with pytest.raises(TransitionLogError, match="new stores other fields than old"):
        SCHEMA.check_same_source(Schema({**other_action.fields, "intervention": ("bool", ())}), "old", "new")
    with pytest.raises(TransitionLogError, match="new stores other fields than old"):
        FLAGGED.check_same_source(Schema({**SCHEMA.fields, "intervention": ("uint8", ())}), "old", "new")
    meta = {"encoder": "a"}
    with pytest.raises(TransitionLogError, match="different sources: encoder a vs b"):
        Schema(SCHEMA.fields, meta).check_same_source(Schema(FLAGGED.fields, {"encoder": "b"}), "old", "new")
    # appending needs the log's own layout: records with the flag would not fit an older log, nor the reverse
    TransitionWriter(tmp_path / "old", SCHEMA).close()
    with pytest.raises(TransitionLogError, match=r"old/schema.json and this run differ in the field\(s\) interv"):
        TransitionWriter(tmp_path / "old", FLAGGED)
    TransitionWriter(tmp_path / "new", FLAGGED).close()
    with pytest.raises(TransitionLogError, match="new/schema.json and this run differ"):
        TransitionWriter(tmp_path / "new", SCHEMA)
