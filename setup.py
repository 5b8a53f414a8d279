"""ament_python package msdp: the Python packages live in src/, config/ and launch/ go to share/msdp."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "msdp"

setup(
    name=PACKAGE,
    version="0.1.0",
    package_dir={"": "src"},
    packages=find_packages("src"),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml")),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
    ],
    install_requires=["setuptools", "numpy", "pyyaml"],
    zip_safe=True,
    maintainer="msdp developers",
    description="MultiSensory Dynamic Pretraining on a Franka arm, as a ROS 2 stack",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "msdp = msdp.cli:main",
            "driver_node = msdp_franka_driver.driver_node:main",
            "recorder_node = msdp_perception.recorder_node:main",
            "teleop_node = msdp_policy.teleop_node:main",
            "encoder_node = msdp_perception.encoder_node:main",
            "camera_node = msdp_perception.camera_node:main",
            "ft_node = msdp_perception.ft_node:main",
            "policy_node = msdp_policy.policy_node:main",
            "learner_node = msdp_policy.learner_node:main",
        ],
    },
)
