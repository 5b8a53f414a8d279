"""The msdp node graph on a real or a simulated Franka.

    ros2 launch msdp msdp.launch.py                                          # simulated FR3 (MuJoCo)
    ros2 launch msdp msdp.launch.py backend:=libfranka robot_ip:=172.16.0.2  # real FR3
    ... rviz:=true task:=peg|push_cube|close_drawer
    ... checkpoint:=runs/pretrain/encoder.safetensors    # also run the encoder node (/msdp/embedding)
    ... record:=bags/session1                            # also record the topics to a rosbag (MCAP)
    ... checkpoint:=... learn:=runs/online               # also the policy and learner nodes: online RL,
                                                         # transitions and checkpoints in runs/online
    ... checkpoint:=... policy:=runs/x/policy.safetensors deterministic:=true   # run a trained policy

The simulated arm publishes /clock and stamps with simulated time, so the other nodes and rviz follow it with
use_sim_time.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("msdp")
    backend = LaunchConfiguration("backend")
    simulated = PythonExpression(["'", backend, "' == 'mujoco'"])
    learn, policy = LaunchConfiguration("learn"), LaunchConfiguration("policy")
    return LaunchDescription(
        [
            DeclareLaunchArgument("backend", default_value="mujoco", description="mujoco | libfranka"),
            DeclareLaunchArgument("robot_ip", default_value="172.16.0.2", description="FCI address (libfranka)"),
            DeclareLaunchArgument("task", default_value="peg", description="scene: peg | push_cube | close_drawer"),
            DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with config/msdp.rviz"),
            DeclareLaunchArgument("checkpoint", default_value="", description="encoder checkpoint; empty = no encoder"),
            DeclareLaunchArgument("record", default_value="", description="bag folder to record to; empty = none"),
            DeclareLaunchArgument("learn", default_value="", description="online RL run folder; empty = no learning"),
            DeclareLaunchArgument("policy", default_value="", description="policy.safetensors to act with"),
            DeclareLaunchArgument("deterministic", default_value="false", description="policy: mean action"),
            Node(
                package="msdp",
                executable="driver_node",
                name="franka_driver",
                output="screen",
                parameters=[
                    os.path.join(share, "config", "driver.yaml"),
                    {
                        "backend": backend,
                        "libfranka.robot_ip": LaunchConfiguration("robot_ip"),
                        "task.name": LaunchConfiguration("task"),
                    },
                ],
            ),
            Node(
                package="msdp",
                executable="encoder_node",
                name="msdp_encoder",
                output="screen",
                parameters=[
                    os.path.join(share, "config", "encoder.yaml"),
                    {"checkpoint": LaunchConfiguration("checkpoint"), "use_sim_time": simulated},
                ],
                condition=IfCondition(PythonExpression(["'", LaunchConfiguration("checkpoint"), "' != ''"])),
            ),
            Node(
                package="msdp",
                executable="recorder_node",
                name="recorder",
                output="screen",
                parameters=[
                    os.path.join(share, "config", "recorder.yaml"),
                    {"output": LaunchConfiguration("record"), "use_sim_time": simulated},
                ],
                condition=IfCondition(PythonExpression(["'", LaunchConfiguration("record"), "' != ''"])),
            ),
            Node(
                package="msdp",
                executable="policy_node",
                name="msdp_policy",
                output="screen",
                parameters=[
                    os.path.join(share, "config", "policy.yaml"),
                    {
                        "transitions": PythonExpression(["('", learn, "' or 'runs/eval') + '/transitions'"]),
                        "policy": LaunchConfiguration("policy"),
                        "encoder_checkpoint": LaunchConfiguration("checkpoint"),
                        "deterministic": LaunchConfiguration("deterministic"),
                        "task.name": LaunchConfiguration("task"),
                        "use_sim_time": simulated,
                    },
                ],
                condition=IfCondition(PythonExpression(["'", learn, "' != '' or '", policy, "' != ''"])),
            ),
            Node(
                package="msdp",
                executable="learner_node",
                name="msdp_learner",
                output="screen",
                parameters=[
                    os.path.join(share, "config", "learner.yaml"),
                    {
                        "transitions": PythonExpression(["'", learn, "' + '/transitions'"]),
                        "out": learn,
                        "encoder_checkpoint": LaunchConfiguration("checkpoint"),
                        "task.name": LaunchConfiguration("task"),
                    },
                ],
                condition=IfCondition(PythonExpression(["'", learn, "' != ''"])),
            ),
            Node(
                package="rviz2",
                executable="rviz2",
                arguments=["-d", os.path.join(share, "config", "msdp.rviz")],
                parameters=[{"use_sim_time": simulated}],
                condition=IfCondition(LaunchConfiguration("rviz")),
            ),
        ]
    )
