"""The simulated Franka: FR3 model, task scenes, MuJoCo physics under the real control law, the simulated
backend of the driver node, the gym-style environment and data collection.

Nothing a real cell runs imports this package; it is the only place that imports MuJoCo.
"""

import os

# MuJoCo picks its OpenGL platform at import time; offscreen EGL works with no display.
os.environ.setdefault("MUJOCO_GL", "egl")
