"""Random-action data collection on the simulated Franka, recorded to a rosbag (what `msdp collect-ros` runs).

    ros2 launch msdp collect.launch.py episodes:=20 out:=bags/play task:=peg real_time_factor:=3.0

The teleop node (random play) exits after its episodes; stop the launch (Ctrl-C) then, which closes the bag.
Teleop node and recorder run on simulated time (/clock); the driver's sensor rates are rates of simulated time.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("msdp")
    task = LaunchConfiguration("task")
    real_time_factor = LaunchConfiguration("real_time_factor")
    return LaunchDescription(
        [
            DeclareLaunchArgument("task", default_value="peg", description="scene: peg | push_cube | close_drawer"),
            DeclareLaunchArgument("episodes", default_value="10", description="episodes to collect"),
            DeclareLaunchArgument("out", default_value="", description="new bag folder (default: bags/<date-time>)"),
            DeclareLaunchArgument("real_time_factor", default_value="1.0", description="simulated s per wall s"),
            Node(
                package="msdp",
                executable="driver_node",
                name="franka_driver",
                output="screen",
                parameters=[
                    os.path.join(share, "config", "driver.yaml"),
                    {
                        "backend": "mujoco",
                        "task.name": task,
                        "real_time_factor": real_time_factor,
                    },
                ],
            ),
            Node(
                package="msdp",
                executable="recorder_node",
                name="recorder",
                output="screen",
                parameters=[
                    os.path.join(share, "config", "recorder.yaml"),
                    {"output": ParameterValue(LaunchConfiguration("out"), value_type=str), "use_sim_time": True},
                ],
            ),
            Node(
                package="msdp",
                executable="teleop_node",
                name="teleop",
                output="screen",
                parameters=[
                    {
                        "task.name": task,
                        "episodes": LaunchConfiguration("episodes"),
                        "operator_kind": "random",
                        "use_sim_time": True,
                    }
                ],
            ),
        ]
    )
