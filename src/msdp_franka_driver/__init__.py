"""Franka driver: the Cartesian impedance law, its safety filters, and the libfranka and MuJoCo backends."""

import os

# MuJoCo picks its OpenGL platform at import time; offscreen EGL works with no display.
os.environ.setdefault("MUJOCO_GL", "egl")
