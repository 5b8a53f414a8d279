"""The msdp node graph on a real or a simulated Franka.

    ros2 launch msdp msdp.launch.py                                          # simulated FR3 (MuJoCo)
    ros2 launch msdp msdp.launch.py backend:=libfranka robot_ip:=172.16.0.2 \\
        camera:=/dev/video0 ft:=ati ft_ip:=192.168.1.1                       # a real cell
    ros2 launch msdp msdp.launch.py virtual_cell:=true                       # the simulated arm behind the real
                                                                             # sensors' protocols, read by the
                                                                             # camera and F/T nodes
    ... camera_topic:=/camera/camera/color/image_raw   # another camera driver (e.g. realsense2_camera) instead
    ... ft:=franka_estimate                            # the FR3's own wrench estimate instead of an ATI sensor
    ... ft:=/my_sensor/wrench                          # or any WrenchStamped topic
    ... rviz:=true task:=peg|push_cube|close_drawer
    ... checkpoint:=runs/pretrain/encoder.safetensors    # also run the encoder node (/msdp/embedding)
    ... record:=bags/session1                            # also record the topics to a rosbag (MCAP)
    ... checkpoint:=... learn:=runs/online               # also the policy and learner nodes: online RL,
                                                         # transitions and checkpoints in runs/online
    ... checkpoint:=... policy:=runs/x/policy.safetensors deterministic:=true   # run a trained policy
    ... learn:=... goal_file:=config/goal.yaml         # a real cell: the taught goal, motion resets
    ... learn:=... offline:=runs/offline               # RLPD: the offline log in half of each batch
    ... learn:=... teleop:=spacemouse                  # the operator may take over (interventions; a keyboard
                                                       # operator: teleop_node -p mode:=intervene in a terminal)

The simulated arm publishes /clock and stamps with simulated time, so the other nodes and rviz follow it with
use_sim_time. `learn:=` needs `checkpoint:=` (the encoder the policy acts on): the launch refuses it otherwise.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node

from msdp import vocabulary as vocab

CAMERA_TOPIC, WRENCH_TOPIC, FRANKA_WRENCH = vocab.IMAGE.name, vocab.WRENCH.name, vocab.EXTERNAL_WRENCH.name
VIRTUAL_CAMERA = "http://127.0.0.1:8080/stream.mjpg"  # the virtual cell's defaults (config/driver.yaml)


def refuse_learning_without_an_encoder(context) -> list:
    """Online learning acts on one encoder's embeddings: without it the policy would wait forever."""
    if context.launch_configurations["learn"] and not context.launch_configurations["checkpoint"]:
        raise RuntimeError("learn:= needs checkpoint:= (the encoder.safetensors the policy acts on)")
    return []


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("msdp")
    arg = LaunchConfiguration
    backend, virtual_cell = arg("backend"), arg("virtual_cell")
    simulated = PythonExpression(["'", backend, "' == 'mujoco'"])
    learn, policy = arg("learn"), arg("policy")
    # the sensors' own nodes: on a real cell, or reading the virtual cell
    sensor_nodes = PythonExpression(["'", backend, "' == 'libfranka' or '", virtual_cell, "' == 'true'"])
    camera_node = PythonExpression(["(", sensor_nodes, ") and '", arg("camera_topic"), "' == ''"])
    ft_node = PythonExpression(["(", sensor_nodes, ") and '", arg("ft"), "' == 'ati'"])
    camera_topic = PythonExpression(["'", arg("camera_topic"), "' or '", CAMERA_TOPIC, "'"])
    wrench_topic = PythonExpression(
        [f"{{'ati': '{WRENCH_TOPIC}', 'franka_estimate': '{FRANKA_WRENCH}'}}.get('", arg("ft"), "', '", arg("ft"), "')"]
    )  # fmt: skip (for the recorder; the encoder takes the source itself)
    return LaunchDescription(
        [
            DeclareLaunchArgument("backend", default_value="mujoco", description="mujoco | libfranka"),
            DeclareLaunchArgument("robot_ip", default_value="172.16.0.2", description="FCI address (libfranka)"),
            DeclareLaunchArgument("virtual_cell", default_value="false", description="mujoco: sensors via protocols"),
            DeclareLaunchArgument("camera", default_value="0", description="camera_node device: index, path, URL"),
            DeclareLaunchArgument("camera_topic", default_value="", description="another driver's image topic"),
            DeclareLaunchArgument("ft", default_value="ati", description="ati | franka_estimate | a wrench topic"),
            DeclareLaunchArgument("ft_ip", default_value="192.168.1.1", description="the Net F/T box's address"),
            DeclareLaunchArgument("task", default_value="peg", description="scene: peg | push_cube | close_drawer"),
            DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with config/msdp.rviz"),
            DeclareLaunchArgument("checkpoint", default_value="", description="encoder checkpoint; empty = no encoder"),
            DeclareLaunchArgument("record", default_value="", description="bag folder to record to; empty = none"),
            DeclareLaunchArgument("learn", default_value="", description="online RL run folder; empty = no learning"),
            DeclareLaunchArgument("policy", default_value="", description="policy.safetensors to act with"),
            DeclareLaunchArgument("deterministic", default_value="false", description="policy: mean action"),
            DeclareLaunchArgument("goal_file", default_value="", description="taught goal (msdp teach-goal)"),
            DeclareLaunchArgument("offline", default_value="", description="RLPD offline log(s), comma-separated"),
            DeclareLaunchArgument("teleop", default_value="", description="intervening operator: spacemouse"),
            OpaqueFunction(function=refuse_learning_without_an_encoder),
            SetEnvironmentVariable(  # large camera images over DDS (see config/fastdds.xml)
                "FASTDDS_DEFAULT_PROFILES_FILE",
                os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", os.path.join(share, "config", "fastdds.xml")),
            ),
            Node(
                package="msdp",
                executable="driver_node",
                name="franka_driver",
                output="screen",
                parameters=[
                    os.path.join(share, "config", "driver.yaml"),
                    {
                        "backend": backend,
                        "libfranka.robot_ip": arg("robot_ip"),
                        "task.name": arg("task"),
                        "sim_sensors": PythonExpression(
                            ["'virtual_cell' if '", virtual_cell, "' == 'true' else 'topics'"]
                        ),
                    },
                ],
            ),
            Node(
                package="msdp",
                executable="camera_node",
                name="camera",
                output="screen",
                parameters=[
                    os.path.join(share, "config", "camera.yaml"),
                    {
                        "device": PythonExpression(
                            ["'", VIRTUAL_CAMERA, "' if '", virtual_cell, "' == 'true' else '", arg("camera"), "'"]
                        ),  # fmt: skip
                        "use_sim_time": simulated,
                    },
                ],
                condition=IfCondition(camera_node),
            ),
            Node(
                package="msdp",
                executable="ft_node",
                name="netft",
                output="screen",
                parameters=[
                    os.path.join(share, "config", "ft.yaml"),
                    {
                        "sensor_ip": PythonExpression(
                            ["'127.0.0.1' if '", virtual_cell, "' == 'true' else '", arg("ft_ip"), "'"]
                        ),  # fmt: skip
                        "http_port": PythonExpression(["8081 if '", virtual_cell, "' == 'true' else 80"]),
                        "use_sim_time": simulated,
                    },
                ],
                condition=IfCondition(ft_node),
            ),
            Node(
                package="msdp",
                executable="encoder_node",
                name="msdp_encoder",
                output="screen",
                parameters=[
                    os.path.join(share, "config", "encoder.yaml"),
                    {"checkpoint": arg("checkpoint"), "wrench": arg("ft"), "use_sim_time": simulated},
                ],
                remappings=[(CAMERA_TOPIC, camera_topic)],
                condition=IfCondition(PythonExpression(["'", arg("checkpoint"), "' != ''"])),
            ),
            Node(
                package="msdp",
                executable="recorder_node",
                name="recorder",
                output="screen",
                parameters=[
                    os.path.join(share, "config", "recorder.yaml"),
                    {"output": arg("record"), "use_sim_time": simulated},
                ],
                remappings=[(CAMERA_TOPIC, camera_topic), (WRENCH_TOPIC, wrench_topic)],
                condition=IfCondition(PythonExpression(["'", arg("record"), "' != ''"])),
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
                        "policy": policy,
                        "encoder_checkpoint": arg("checkpoint"),
                        "deterministic": arg("deterministic"),
                        "task.name": arg("task"),
                        "goal_file": arg("goal_file"),
                        "reset_kind": PythonExpression(["'motion' if '", arg("goal_file"), "' else 'driver'"]),
                        "auto_recover": PythonExpression(["'", arg("goal_file"), "' != ''"]),
                        "require_operator": PythonExpression(["'", arg("teleop"), "' != ''"]),
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
                        "encoder_checkpoint": arg("checkpoint"),
                        "task.name": arg("task"),
                        "offline": arg("offline"),
                        "agent.rlpd": PythonExpression(["'", arg("offline"), "' != ''"]),
                        "agent.layer_norm": PythonExpression(["'", arg("offline"), "' != ''"]),
                    },
                ],
                condition=IfCondition(PythonExpression(["'", learn, "' != ''"])),
            ),
            Node(
                package="msdp",
                executable="teleop_node",
                name="teleop",
                output="screen",
                emulate_tty=True,
                parameters=[
                    os.path.join(share, "config", "teleop.yaml"),
                    {
                        "mode": "intervene",
                        "operator_kind": arg("teleop"),
                        "goal_file": arg("goal_file"),
                        "reset_kind": "driver",
                        "task.name": arg("task"),
                        "use_sim_time": simulated,
                    },
                ],
                condition=IfCondition(PythonExpression(["'", arg("teleop"), "' != ''"])),
            ),
            Node(
                package="rviz2",
                executable="rviz2",
                arguments=["-d", os.path.join(share, "config", "msdp.rviz")],
                parameters=[{"use_sim_time": simulated}],
                condition=IfCondition(arg("rviz")),
            ),
        ]
    )
