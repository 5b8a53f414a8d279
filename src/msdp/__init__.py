"""msdp: MultiSensory Dynamic Pretraining on a Franka arm, as a ROS 2 stack (shared helpers and the CLI)."""
