#!/usr/bin/env bash
# Set up everything msdp needs on a fresh machine; does nothing when it is already set up.
#   .venv             the project's environment: torch 2.13.0 (CPU), ROS 2 Kilted wheels, mujoco, pylibfranka, ...,
#                     and colcon with ament_index_python, so `.venv/bin/colcon build` builds msdp as a ROS package
#   .venv-franka-sim  franka-sim, the libfranka protocol peer for tests (pins numpy 1.26 and mujoco < 3.3)
# If a ROS 2 installation is sourced (ROS_DISTRO set and its rclpy importable), .venv sees it through
# --system-site-packages and the ROS wheels are not installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
STAMP=.venv/.msdp-installed
FSIM_STAMP=.venv-franka-sim/.msdp-installed
fingerprint=$(cat requirements.txt requirements-ros.txt setup.py setup.cfg scripts/setup_env.sh | sha256sum | cut -c1-16)
ros_sourced=0
if [ -n "${ROS_DISTRO:-}" ] && "$PYTHON" -c "import rclpy" 2>/dev/null; then ros_sourced=1; fi
fingerprint="$fingerprint-ros$ros_sourced"

# System libraries for MuJoCo's offscreen EGL rendering.
if ! ldconfig -p | grep -q "libEGL.so.1" || ! ldconfig -p | grep -q "libOpenGL.so.0\|libGL.so.1"; then
  echo "[setup] installing EGL/OpenGL system libraries"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri libglx-mesa0 >/dev/null
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$fingerprint" ]; then
  echo "[setup] .venv is up to date"
else
  echo "[setup] creating .venv"
  if [ "$ros_sourced" = 1 ]; then
    "$PYTHON" -m venv --system-site-packages .venv
  else
    "$PYTHON" -m venv .venv
  fi
  .venv/bin/pip install -q --upgrade pip
  # torch first and pinned, so no later requirement can pull a newer (CUDA) build.
  .venv/bin/pip install -q torch==2.13.0
  if [ "$ros_sourced" = 0 ]; then .venv/bin/pip install -q -r requirements-ros.txt; fi
  .venv/bin/pip install -q -r requirements.txt torch==2.13.0
  .venv/bin/pip install -q --no-deps -e .
  echo "$fingerprint" > "$STAMP"
fi

if [ -f "$FSIM_STAMP" ]; then
  echo "[setup] .venv-franka-sim is up to date"
else
  echo "[setup] creating .venv-franka-sim"
  "$PYTHON" -m venv .venv-franka-sim
  .venv-franka-sim/bin/pip install -q --upgrade pip
  .venv-franka-sim/bin/pip install -q franka-sim==1.1.7
  touch "$FSIM_STAMP"
fi

.venv/bin/python -c "import rclpy, mujoco, torch, pylibfranka, rosbags, ament_index_python, colcon_ros; print('[setup] ok: torch', torch.__version__, '| mujoco', mujoco.__version__)"
