"""Synchronised training samples from rosbag2 recordings, decoded once and cached as arrays.

One sample per camera image, assembled by the same ``SensorSynchronizer`` the encoder node runs online, so
pretraining sees exactly what the robot will feed the model: a sensor that was late, missing or non-finite
at that moment is masked (``present`` False), not dropped and not filled with garbage.

The image topic may hold ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` (jpeg, png); a bag without
the configured image topic but with its ``/compressed`` sibling (image_transport's name) is read from that.
Images go through the encoder node's preprocessing (``messages.image_from_msg``) with the spec's region of
interest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from msdp import vocabulary as vocab
from msdp.specs import FULL_FRAME, ObservationSpec
from msdp_perception.bags import STORAGE_SUFFIXES, BagDamaged, BagError, BagReader
from msdp_perception.messages import SensorDataError, image_from_msg, proprio_from_joint_state
from msdp_perception.observation import MODALITIES, SensorSynchronizer, SyncConfig

_log = logging.getLogger(__name__)
CACHE_VERSION = 1  # bump when the decoding changes, so old cache files are not reused
ARRAYS = ("images", "wrench", "proprio", "present", "stamps", "actions", "next_index")


@dataclass(frozen=True)
class BagTopics:
    """Topic names of the recorded streams (the action topic is optional)."""

    image: str = vocab.IMAGE.name
    wrench: str = vocab.WRENCH.name
    joint_states: str = vocab.JOINT_STATES.name
    action: str = vocab.ACTION.name


# the message types each stream may have in a bag
EXPECTED_TYPES = {
    "image": (vocab.IMAGE.msgtype, vocab.COMPRESSED_IMAGE.msgtype),
    "wrench": (vocab.WRENCH.msgtype,),
    "joint_states": (vocab.JOINT_STATES.msgtype,),
    "action": (vocab.ACTION.msgtype,),
}
COMPRESSED_SUFFIX = vocab.COMPRESSED_IMAGE.name.removeprefix(vocab.IMAGE.name)  # image_transport's "/compressed"


def _action_from_msg(msg) -> np.ndarray:
    """TwistStamped -> (dx, dy, dz, dyaw): the commanded end-effector displacement of one policy step."""
    linear, yaw = vocab.displacement_from_twist(msg)
    return np.array([*linear, yaw], dtype=np.float32)


def decode_bag(
    path: Path, spec: ObservationSpec, sync: SyncConfig, topics: BagTopics, progress: bool = True
) -> dict[str, np.ndarray]:
    """The sample arrays of one bag (``next_index`` relative to this bag)."""
    with BagReader(path) as reader:
        topics = _image_topic_in(reader.topics, topics)
        _check_topics(path, reader.topics, topics)
        wanted = [t for t in dataclasses.astuple(topics) if t in reader.topics]
        readings: dict[str, list[tuple[int, np.ndarray]]] = {name: [] for name in EXPECTED_TYPES}
        decoders = {
            topics.image: ("image", lambda msg: image_from_msg(msg, spec.image_size, spec.roi)),
            topics.wrench: ("wrench", vocab.wrench_array),
            topics.joint_states: ("joint_states", proprio_from_joint_state),
            topics.action: ("action", _action_from_msg),
        }
        total = sum(reader.message_counts[t] for t in wanted)
        messages = tqdm(reader.messages(wanted), total=total, desc=path.name, unit="msg", disable=not progress)
        try:
            for topic, _, timestamp, msg in messages:
                name, decode = decoders[topic]
                try:
                    readings[name].append((vocab.stamp_nanoseconds(msg.header), decode(msg)))
                except SensorDataError as exc:
                    raise BagError(f"bag {path}: topic {topic}, message at {timestamp} ns: {exc}") from exc
        except BagDamaged as exc:  # the samples before the damage are sound
            _log.warning("%s; using the samples before it", exc)
    return _synchronise(readings, spec, sync)


def _image_topic_in(available: dict[str, str], topics: BagTopics) -> BagTopics:
    """``topics``, with the image read from ``<image>/compressed`` when the bag has only that."""
    compressed = topics.image + COMPRESSED_SUFFIX
    if topics.image not in available and compressed in available:
        return dataclasses.replace(topics, image=compressed)
    return topics


def _check_topics(path: Path, available: dict[str, str], topics: BagTopics) -> None:
    required = [getattr(topics, name) for name in ("image", "wrench", "joint_states")]
    missing = [t for t in required if t not in available]
    if missing:
        has = ", ".join(f"{t} ({available[t]})" for t in sorted(available)) or "no topics"
        raise BagError(f"bag {path} lacks topic(s) {', '.join(missing)}; it has {has}")
    for name, expected in EXPECTED_TYPES.items():
        topic = getattr(topics, name)
        if topic in available and available[topic] not in expected:
            raise BagError(f"bag {path}: topic {topic} has type {available[topic]}, expected {' or '.join(expected)}")


def _synchronise(
    readings: dict[str, list[tuple[int, np.ndarray]]], spec: ObservationSpec, sync: SyncConfig
) -> dict[str, np.ndarray]:
    """Feed every reading to the synchroniser in header-stamp order and observe at each image's stamp.

    At equal stamps wrenches and joint states go first, so an observation at t sees readings stamped t. Every
    image gives a sample (observed at its own stamp, its vision is present); late or missing F/T and joint
    states are masked in it, so the model learns to do without them.
    """
    events = [
        (stamp, rank, index, kind)
        for rank, kind in enumerate(("wrench", "joint_states", "image"))
        for index, (stamp, _) in enumerate(readings[kind])
    ]
    events.sort()
    synchronizer = SensorSynchronizer(spec, sync)
    add = {"wrench": synchronizer.add_wrench, "joint_states": synchronizer.add_joint_state}
    observations, image_ns = [], []
    for stamp_ns, _, index, kind in events:
        value = readings[kind][index][1]
        t = stamp_ns * 1e-9
        if kind == "image":
            synchronizer.add_image(t, value)
            observations.append(synchronizer.observe(t))
            image_ns.append(stamp_ns)
        else:
            add[kind](t, value)

    n, size = len(observations), spec.image_size
    arrays = {
        "images": np.stack([o.image for o in observations]) if n else np.zeros((0, size, size, 3), np.uint8),
        "wrench": np.stack([o.wrench for o in observations]) if n else np.zeros((0, spec.ft_window, 6), np.float32),
        "proprio": np.stack([o.proprio for o in observations]) if n else np.zeros((0, spec.proprio_dim), np.float32),
        "present": np.array([[o.present[m] for m in MODALITIES] for o in observations], bool).reshape(n, 3),
        "stamps": np.array(image_ns, np.int64) * 1e-9,
    }
    arrays["actions"], arrays["next_index"] = _link_actions(np.array(image_ns, np.int64), readings["action"])
    return arrays


def _link_actions(image_ns: np.ndarray, actions: list[tuple[int, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The first action stamped in [t_k, t_k+1) links sample k to k+1; samples without one get NaN and -1."""
    n = len(image_ns)
    linked_actions = np.full((n, 4), np.nan, np.float32)
    next_index = np.full(n, -1, np.int64)
    if not actions or n < 2:
        return linked_actions, next_index
    actions = sorted(actions, key=lambda a: a[0])
    action_ns = np.array([stamp for stamp, _ in actions], np.int64)
    first = np.searchsorted(action_ns, image_ns[:-1], side="left")
    linked = first < len(action_ns)
    linked[linked] &= action_ns[first[linked]] < image_ns[1:][linked]
    for k in np.flatnonzero(linked):
        linked_actions[k] = actions[first[k]][1]
        next_index[k] = k + 1
    return linked_actions, next_index


def _cache_file(cache_dir: Path, path: Path, spec: ObservationSpec, sync: SyncConfig, topics: BagTopics) -> Path:
    """Named by a hash of everything the arrays depend on: the bag's files, the sizes, the sync rule, the topics
    (the sizes first, so caches written when they were part of the sync rule stay valid), and the region of
    interest unless it is the whole frame (so caches written before it existed stay valid)."""
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file())
    rule = {"image_size": spec.image_size, "ft_window": spec.ft_window, **dataclasses.asdict(sync)}
    if tuple(spec.roi) != FULL_FRAME:
        rule["roi"] = list(spec.roi)
    key = json.dumps([CACHE_VERSION, str(path.resolve()), files, rule, dataclasses.asdict(topics)])
    return cache_dir / f"{path.name}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"


def _load_cache(file: Path) -> dict[str, np.ndarray] | None:
    if not file.exists():
        return None
    try:
        with np.load(file, allow_pickle=False) as data:
            return {name: data[name] for name in ARRAYS}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None  # an unreadable or stale-format cache file is rebuilt


def _save_cache(file: Path, arrays: dict[str, np.ndarray]) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    partial = file.with_name(f".{file.name}.{os.getpid()}.partial")
    with partial.open("wb") as out:
        np.savez(out, **arrays)
    os.replace(partial, file)


def find_bags(paths: list[Path]) -> list[Path]:
    """Each path is a bag folder (it has metadata.yaml or a .mcap/.db3 file) or a folder of bag folders."""

    def is_bag(p: Path) -> bool:
        return p.is_dir() and ((p / "metadata.yaml").exists() or any(f.suffix in STORAGE_SUFFIXES for f in p.iterdir()))

    bags: list[Path] = []
    for path in map(Path, paths):
        if is_bag(path):
            bags.append(path)
        elif path.is_dir() and (inner := sorted(p for p in path.iterdir() if is_bag(p))):
            bags += inner
        else:
            raise FileNotFoundError(f"{path}: not a rosbag2 folder, nor a folder of them")
    return bags


class BagDataset:
    """Synchronised samples of one or more bags, concatenated in the given order (each in time order).

    Arrays, one row per image: ``images`` (N, H, W, 3) uint8, ``wrench`` (N, ft_window, 6) float32 oldest
    first, ``proprio`` (N, 14) float32, ``present`` (N, 3) bool in ``MODALITIES`` order, ``stamps`` (N,)
    float64 s (image header time), ``actions`` (N, 4) float32 (dx, dy, dz in m, dyaw in rad; NaN where no
    action follows the sample) and ``next_index`` (N,) int64 (the sample that action led to, within the same
    bag, or -1). With ``cache_dir`` the decoded arrays of each bag are kept in one .npz file and reused while
    the bag, the sync rule and the topics are unchanged; ``from_cache`` says whether every bag came from it.
    """

    def __init__(
        self,
        paths: Sequence[Path | str],
        spec: ObservationSpec = ObservationSpec(),  # noqa: B008 - frozen, so a shared default is safe
        sync: SyncConfig = SyncConfig(),  # noqa: B008
        topics: BagTopics = BagTopics(),  # noqa: B008
        cache_dir: Path | None = None,
        progress: bool = True,
    ):
        if isinstance(paths, (str, Path)):
            paths = [paths]
        if not paths:
            raise ValueError("BagDataset needs at least one bag folder")
        self.paths = [Path(p) for p in paths]
        self.spec, self.sync, self.topics = spec, sync, topics
        self.from_cache = cache_dir is not None
        parts = []
        for path in self.paths:
            cache_file = _cache_file(Path(cache_dir), path, spec, sync, topics) if cache_dir is not None else None
            arrays = _load_cache(cache_file) if cache_file is not None else None
            if arrays is None:
                self.from_cache = False
                arrays = decode_bag(path, spec, sync, topics, progress)
                if cache_file is not None:
                    _save_cache(cache_file, arrays)
            parts.append(arrays)

        offsets = np.cumsum([0] + [len(p["stamps"]) for p in parts])
        for part, offset in zip(parts, offsets, strict=False):
            part["next_index"] = np.where(part["next_index"] >= 0, part["next_index"] + offset, -1)
        merged = {name: np.concatenate([p[name] for p in parts]) for name in ARRAYS}
        self.images: np.ndarray = merged["images"]
        self.wrench: np.ndarray = merged["wrench"]
        self.proprio: np.ndarray = merged["proprio"]
        self.present: np.ndarray = merged["present"]
        self.stamps: np.ndarray = merged["stamps"]
        self.actions: np.ndarray = merged["actions"]
        self.next_index: np.ndarray = merged["next_index"]

    def __len__(self) -> int:
        return len(self.stamps)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {
            "image": self.images[i],
            "wrench": self.wrench[i],
            "proprio": self.proprio[i],
            "present": self.present[i],
            "stamp": self.stamps[i],
            "action": self.actions[i],
            "next_index": self.next_index[i],
        }
