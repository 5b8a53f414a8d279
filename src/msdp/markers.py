"""rviz markers more than one node draws."""

from __future__ import annotations

from collections.abc import Sequence

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, PoseStamped
from visualization_msgs.msg import Marker

from msdp.vocabulary import BASE_FRAME


def workspace_box_marker(low: Sequence[float], high: Sequence[float], stamp: Time, namespace: str) -> Marker:
    """A workspace box's twelve edges as a line list in the base frame."""
    box = Marker(ns=namespace, id=0, type=Marker.LINE_LIST, action=Marker.ADD)
    box.header.stamp, box.header.frame_id = stamp, BASE_FRAME
    box.pose.orientation.w = 1.0
    box.scale.x = 0.003
    box.color.g, box.color.b, box.color.a = 0.8, 1.0, 0.8
    corners = [(x, y, z) for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])]
    for i, a in enumerate(corners):
        for b in corners[i + 1 :]:
            if sum(u != v for u, v in zip(a, b, strict=True)) == 1:  # box edges differ in one axis
                box.points += [Point(x=a[0], y=a[1], z=a[2]), Point(x=b[0], y=b[1], z=b[2])]
    return box


def sphere_marker(namespace: str, pose: PoseStamped, size: float, rgb: tuple[float, float, float]) -> Marker:
    """A sphere at a stamped pose (a target, a goal), ``size`` m across."""
    marker = Marker(ns=namespace, id=0, type=Marker.SPHERE, action=Marker.ADD)
    marker.header = pose.header
    marker.pose = pose.pose
    marker.scale.x = marker.scale.y = marker.scale.z = size
    marker.color.r, marker.color.g, marker.color.b, marker.color.a = (*rgb, 0.9)
    return marker
