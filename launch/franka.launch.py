"""The real Franka: the driver node with the libfranka backend (1 kHz torque loop in its own process).

    ros2 launch msdp franka.launch.py robot_ip:=172.16.0.2 [rviz:=true]
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("msdp")
    return LaunchDescription(
        [
            DeclareLaunchArgument("robot_ip", description="FCI address of the robot"),
            DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with config/msdp.rviz"),
            Node(
                package="msdp",
                executable="driver_node",
                name="franka_driver",
                output="screen",
                parameters=[
                    os.path.join(share, "config", "driver.yaml"),
                    {"backend": "libfranka", "libfranka.robot_ip": LaunchConfiguration("robot_ip")},
                ],
            ),
            Node(
                package="rviz2",
                executable="rviz2",
                arguments=["-d", os.path.join(share, "config", "msdp.rviz")],
                condition=IfCondition(LaunchConfiguration("rviz")),
            ),
        ]
    )
