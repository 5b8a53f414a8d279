"""Quaternion helpers on plain numpy arrays, quaternions as (x, y, z, w) like ROS messages.

Kept tiny and allocation-light because the control law calls them at 1 kHz.
"""

from __future__ import annotations

import math

import numpy as np


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ax, ay, az, aw = a.tolist()
    bx, by, bz, bw = b.tolist()
    return np.array(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ]
    )


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    x, y, z, w = q.tolist()
    return np.array([-x, -y, -z, w])


def quat_normalize(q: np.ndarray) -> np.ndarray:
    return np.asarray(q, dtype=float) / np.linalg.norm(q)


def quat_to_rotvec(q: np.ndarray) -> np.ndarray:
    """Rotation vector (axis * angle, angle in [0, pi]) of a unit quaternion."""
    q = np.asarray(q, dtype=float)
    v = q[:3] if q[3] >= 0.0 else -q[:3]
    w = abs(q[3])
    s = math.sqrt(float(v.dot(v)))  # np.linalg.norm's own arithmetic, without its argument handling
    if s < 1e-12:
        return 2.0 * v
    return (2.0 * np.arctan2(s, w) / s) * v


def rotvec_to_quat(r: np.ndarray) -> np.ndarray:
    r = np.asarray(r, dtype=float)
    angle = math.sqrt(float(r.dot(r)))  # np.linalg.norm's own arithmetic, without its argument handling
    if angle < 1e-12:
        return np.array([0.5 * r[0], 0.5 * r[1], 0.5 * r[2], 1.0])
    axis = r / angle
    s = np.sin(0.5 * angle)
    return np.array([axis[0] * s, axis[1] * s, axis[2] * s, np.cos(0.5 * angle)])


def orientation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Rotation vector, in the base frame, that turns ``current`` into ``target``."""
    return np.array(rotation_error(target.tolist(), current.tolist()))


def rotation_error(target: list[float], current: list[float]) -> tuple[float, float, float]:
    """``orientation_error`` on plain floats (x y z w): written out because the law calls it every cycle.

    target * conj(current), then its log.
    """
    tx, ty, tz, tw = target
    cx, cy, cz, cw = current
    x = -tw * cx + tx * cw - ty * cz + tz * cy
    y = -tw * cy + tx * cz + ty * cw - tz * cx
    z = -tw * cz - tx * cy + ty * cx + tz * cw
    w = tw * cw + tx * cx + ty * cy + tz * cz
    if w < 0.0:
        x, y, z, w = -x, -y, -z, -w
    s = math.sqrt(x * x + y * y + z * z)
    scale = 2.0 if s < 1e-12 else 2.0 * math.atan2(s, w) / s
    return scale * x, scale * y, scale * z


def angle_between(a: np.ndarray, b: np.ndarray) -> float:
    """Rotation angle (rad) between two unit quaternions (``ndarray.dot``: ``np.dot``'s arithmetic, without its
    argument handling, since the safety filter calls it twice per 1 kHz cycle)."""
    return 2.0 * math.acos(min(1.0, abs(float(np.asarray(a, dtype=float).dot(b)))))


def nlerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Normalised linear interpolation along the short arc: slerp's cheap twin for small steps."""
    if float(np.dot(a, b)) < 0.0:
        b = -b
    q = a + t * (b - a)
    return q / math.sqrt(float(np.dot(q, q)))


def yaw_quat(yaw: float) -> np.ndarray:
    return np.array([0.0, 0.0, np.sin(0.5 * yaw), np.cos(0.5 * yaw)])


def quat_yaw(q: np.ndarray) -> float:
    """The angle of a rotation about z (quaternion x y z w), the inverse of ``yaw_quat``."""
    return float(2.0 * np.arctan2(q[2], q[3]))


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    x, y, z, w = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation from ``a`` (t=0) to ``b`` (t=1) along the short arc."""
    if float(np.dot(a, b)) < 0.0:
        b = -b
    delta = quat_to_rotvec(quat_multiply(b, quat_conjugate(a)))
    return quat_multiply(rotvec_to_quat(t * delta), a)


def matrix_to_quat(rot: np.ndarray) -> np.ndarray:
    """Unit quaternion (x y z w) of a rotation matrix (Shepperd's method, stable for every angle)."""
    m00, m11, m22 = rot[0, 0], rot[1, 1], rot[2, 2]
    trace = m00 + m11 + m22
    if trace > 0.0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = (rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1], 0.25 * s * s)
    elif m00 > m11 and m00 > m22:
        s = 2.0 * math.sqrt(1.0 + m00 - m11 - m22)
        q = (0.25 * s * s, rot[0, 1] + rot[1, 0], rot[0, 2] + rot[2, 0], rot[2, 1] - rot[1, 2])
    elif m11 > m22:
        s = 2.0 * math.sqrt(1.0 + m11 - m00 - m22)
        q = (rot[0, 1] + rot[1, 0], 0.25 * s * s, rot[1, 2] + rot[2, 1], rot[0, 2] - rot[2, 0])
    else:
        s = 2.0 * math.sqrt(1.0 + m22 - m00 - m11)
        q = (rot[0, 2] + rot[2, 0], rot[1, 2] + rot[2, 1], 0.25 * s * s, rot[1, 0] - rot[0, 1])
    return np.array(q) / s
