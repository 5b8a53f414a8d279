"""The simulated Franka: the driver node with the MuJoCo backend (publishes camera, wrench, joint states, /clock).

    ros2 launch msdp sim.launch.py [rviz:=true] [task:=peg|push_cube|close_drawer]
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
            DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with config/msdp.rviz"),
            DeclareLaunchArgument("task", default_value="peg", description="peg | push_cube | close_drawer"),
            Node(
                package="msdp",
                executable="driver_node",
                name="franka_driver",
                output="screen",
                parameters=[
                    os.path.join(share, "config", "driver.yaml"),
                    {"backend": "mujoco", "task.name": LaunchConfiguration("task"), "use_sim_time": False},
                ],
            ),
            Node(
                package="rviz2",
                executable="rviz2",
                arguments=["-d", os.path.join(share, "config", "msdp.rviz")],
                parameters=[{"use_sim_time": True}],
                condition=IfCondition(LaunchConfiguration("rviz")),
            ),
        ]
    )
