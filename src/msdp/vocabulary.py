"""The words every node, the recorder, the bag reader and collection share: topic names, frames, QoS kinds,
and message <-> array conversions.

No ROS import: readers take any object with the message's field names (rclpy messages and ``rosbags``
messages alike), and writers build messages through a ``make(msgtype, **fields)`` callable -- the node
base passes one that builds rclpy messages, the bag writer one that builds rosbags messages -- so a
recording and a live stream are written and read by the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# -- frames (REP 103/105) -----------------------------------------------------------------------------------
ROBOT_PREFIX = "fr3_"
BASE_FRAME = f"{ROBOT_PREFIX}link0"
FT_FRAME = "ft_sensor"
CAMERA_FRAME = "third_person_camera"
EMBEDDING_FRAME = "msdp_embedding"
TOOL_FRAME = "fr3_hand_tcp"  # libfranka's K frame (the end effector's), where K_F_ext_hat_K is expressed
JOINT_NAMES = tuple(f"{ROBOT_PREFIX}joint{i}" for i in range(1, 8))

# -- QoS kinds: the node base turns each into an rclpy profile ----------------------------------------------
SENSOR = "sensor"  # best effort, keep last 5 (ROS's sensor-data profile)
RELIABLE = "reliable"  # reliable, keep last 10
LATCHED = "latched"  # reliable, transient local, keep last 1: late joiners get the last message
COMMAND = "command"  # reliable, keep last 1: only the newest target matters


@dataclass(frozen=True)
class Topic:
    name: str
    msgtype: str  # e.g. "sensor_msgs/msg/Image"
    qos: str


IMAGE = Topic("/camera/image_raw", "sensor_msgs/msg/Image", SENSOR)
COMPRESSED_IMAGE = Topic("/camera/image_raw/compressed", "sensor_msgs/msg/CompressedImage", SENSOR)
CAMERA_INFO = Topic("/camera/camera_info", "sensor_msgs/msg/CameraInfo", SENSOR)
WRENCH = Topic("/ft_sensor/wrench", "geometry_msgs/msg/WrenchStamped", SENSOR)
EXTERNAL_WRENCH = Topic("/franka/external_wrench", "geometry_msgs/msg/WrenchStamped", SENSOR)  # K_F_ext_hat_K
JOINT_STATES = Topic("/joint_states", "sensor_msgs/msg/JointState", SENSOR)
EE_POSE = Topic("/franka/ee_pose", "geometry_msgs/msg/PoseStamped", SENSOR)
EQUILIBRIUM_POSE = Topic("/franka/equilibrium_pose", "geometry_msgs/msg/PoseStamped", COMMAND)
DRIVER_STATUS = Topic("/franka/status", "std_msgs/msg/String", LATCHED)
ACTION = Topic("/msdp/action", "geometry_msgs/msg/TwistStamped", RELIABLE)
EMBEDDING = Topic("/msdp/embedding", "sensor_msgs/msg/Image", RELIABLE)
ENCODER_INFO = Topic("/msdp/encoder", "std_msgs/msg/String", LATCHED)  # JSON: which encoder makes the embeddings
RECONSTRUCTION = Topic("/msdp/reconstruction", "sensor_msgs/msg/Image", COMMAND)
TASK_GOAL = Topic("/msdp/task_goal", "geometry_msgs/msg/PoseStamped", LATCHED)
REWARD = Topic("/msdp/reward", "std_msgs/msg/Float32", RELIABLE)
SUCCESS = Topic("/msdp/success", "std_msgs/msg/Bool", RELIABLE)
ACTOR_WEIGHTS = Topic("/msdp/actor_weights", "std_msgs/msg/UInt8MultiArray", LATCHED)
MARKERS = Topic("/msdp/markers", "visualization_msgs/msg/MarkerArray", COMMAND)
DIAGNOSTICS = Topic("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", RELIABLE)
CLOCK = Topic("/clock", "rosgraph_msgs/msg/Clock", RELIABLE)
# Episodes on a cell: JSON of msdp_policy.episodes.EpisodeResult (one per ended episode) or of an episode's start
EPISODE = Topic("/msdp/episode", "std_msgs/msg/String", RELIABLE)
# The operator (teleop node): a displacement like ACTION's while the operator drives, and its key/button events
OPERATOR_ACTION = Topic("/msdp/operator/action", "geometry_msgs/msg/TwistStamped", COMMAND)
OPERATOR_EVENT = Topic("/msdp/operator/event", "std_msgs/msg/String", RELIABLE)

RECORDED = (IMAGE, WRENCH, JOINT_STATES, EE_POSE, EQUILIBRIUM_POSE, ACTION, EMBEDDING, TASK_GOAL, REWARD, EPISODE)

DRIVER_NODE = "franka_driver"
RESET_SERVICE = "~/reset"
RECOVER_SERVICE = "~/recover"
HAND_GUIDE_SERVICE = "~/hand_guide"  # std_srvs/SetBool: true = low stiffness, the arm follows a person's hand
DRIVER_RUNNING = "running"  # the driver status when the arm follows targets; anything else is a fault


def driver_service(driver: str, service: str) -> str:
    """The absolute name of a driver service (``~/reset``) for a driver node name like ``/franka_driver``."""
    return f"{driver.rstrip('/')}/{service.removeprefix('~/')}"


# -- message -> arrays --------------------------------------------------------------------------------------
Make = Callable[..., Any]  # make(msgtype, **fields) -> message


def stamp_seconds(header: Any) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def stamp_nanoseconds(header: Any) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def pose_arrays(msg: Any) -> tuple[np.ndarray, np.ndarray]:
    """A PoseStamped (or Pose) as position (3,) and quaternion x y z w (4,)."""
    pose = getattr(msg, "pose", msg)
    p, o = pose.position, pose.orientation
    return np.array([p.x, p.y, p.z], dtype=float), np.array([o.x, o.y, o.z, o.w], dtype=float)


def wrench_array(msg: Any) -> np.ndarray:
    """A WrenchStamped as (fx, fy, fz, tx, ty, tz) float32 (may be non-finite: the sync masks it)."""
    f, t = msg.wrench.force, msg.wrench.torque
    return np.array([f.x, f.y, f.z, t.x, t.y, t.z], dtype=np.float32)


def displacement_from_twist(msg: Any) -> tuple[np.ndarray, float]:
    """An action's TwistStamped as the commanded displacement: linear (m) and yaw about z (rad)."""
    linear = msg.twist.linear
    return np.array([linear.x, linear.y, linear.z], dtype=float), float(msg.twist.angular.z)


# -- arrays -> message ----------------------------------------------------------------------------------------
def header(make: Make, stamp_ns: int, frame_id: str) -> Any:
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return make("std_msgs/msg/Header", stamp=make("builtin_interfaces/msg/Time", sec=sec, nanosec=nanosec),
                frame_id=frame_id)  # fmt: skip


def _vector3(make: Make, values: Any) -> Any:
    x, y, z = (float(v) for v in values)
    return make("geometry_msgs/msg/Vector3", x=x, y=y, z=z)


def pose_msg(make: Make, stamp_ns: int, position: Any, orientation: Any, frame_id: str = BASE_FRAME) -> Any:
    """A PoseStamped in ``frame_id`` from a position and a quaternion x y z w."""
    x, y, z = (float(v) for v in position)
    qx, qy, qz, qw = (float(v) for v in orientation)
    pose = make(
        "geometry_msgs/msg/Pose",
        position=make("geometry_msgs/msg/Point", x=x, y=y, z=z),
        orientation=make("geometry_msgs/msg/Quaternion", x=qx, y=qy, z=qz, w=qw),
    )
    return make("geometry_msgs/msg/PoseStamped", header=header(make, stamp_ns, frame_id), pose=pose)


def wrench_msg(make: Make, stamp_ns: int, wrench: Any, frame_id: str = FT_FRAME) -> Any:
    body = make("geometry_msgs/msg/Wrench", force=_vector3(make, wrench[:3]), torque=_vector3(make, wrench[3:]))
    return make("geometry_msgs/msg/WrenchStamped", header=header(make, stamp_ns, frame_id), wrench=body)


def twist_msg(make: Make, stamp_ns: int, linear: Any, yaw: float, frame_id: str = BASE_FRAME) -> Any:
    """An action's displacement (linear m, yaw rad about z) as a TwistStamped."""
    twist = make("geometry_msgs/msg/Twist", linear=_vector3(make, linear), angular=_vector3(make, (0.0, 0.0, yaw)))
    return make("geometry_msgs/msg/TwistStamped", header=header(make, stamp_ns, frame_id), twist=twist)


def joint_state_msg(make: Make, stamp_ns: int, q: Any, dq: Any, tau: Any = ()) -> Any:
    return make(
        "sensor_msgs/msg/JointState",
        header=header(make, stamp_ns, ""),
        name=list(JOINT_NAMES),
        position=np.asarray(q, dtype=np.float64),
        velocity=np.asarray(dq, dtype=np.float64),
        effort=np.asarray(tau, dtype=np.float64),
    )


def image_msg(make: Make, stamp_ns: int, array: np.ndarray, encoding: str, frame_id: str) -> Any:
    """An image message from an (H, W[, C]) array; ``encoding`` says how to read its bytes (rgb8, 32FC1, ...)."""
    array = np.ascontiguousarray(array)
    return make(
        "sensor_msgs/msg/Image",
        header=header(make, stamp_ns, frame_id),
        height=array.shape[0],
        width=array.shape[1],
        encoding=encoding,
        is_bigendian=0,
        step=array.strides[0],
        data=array.reshape(-1).view(np.uint8),
    )
