"""An evaluation episode as an MP4, to see how a policy succeeds or fails rather than only that it does.

Each frame shows the policy's own camera image (enlarged, nearest neighbour, so its pixels stay visible) next to
a larger view of the scene, over a strip that plots the wrench so far: forces above, torques below, x y z in
red, green and blue, each half scaled to the largest magnitude of the episode so far.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

VIEW_CAMERA = "overview"  # the scene camera beside the policy's (which is the scene's third_person camera)
VIEW_SIZE = (384, 256)  # width, height of the scene view; the policy image is enlarged to the same height
STRIP_HEIGHT = 160  # pixels of the wrench plot under the images: forces in the top half, torques in the bottom
MIN_SCALE = (1.0, 0.1)  # N, Nm: the smallest full scale, so sensor noise at rest does not fill the plot
AXIS_COLOURS = ((0, 0, 220), (0, 170, 0), (220, 0, 0))  # x y z as BGR red, green, blue


def put_text(image: np.ndarray, text: str, origin: tuple[int, int], colour: tuple[int, int, int]) -> None:
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.35, colour, 1, cv2.LINE_AA)


class EpisodeVideo:
    """Frames of one episode into ``path``; ``steps`` (the episode's step limit) sets the plot's time axis."""

    def __init__(self, path: Path, fps: float, steps: int):
        self.steps = steps
        self.wrenches: list[np.ndarray] = []
        self.size = (VIEW_SIZE[1] + VIEW_SIZE[0], VIEW_SIZE[1] + STRIP_HEIGHT)  # width, height of a frame
        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, self.size)
        if not self.writer.isOpened():
            raise OSError(f"{path}: cannot write an MP4 video here (OpenCV's mp4v writer did not open)")

    def add(self, policy_image: np.ndarray, view: np.ndarray, wrench: np.ndarray) -> None:
        """One frame: the policy's RGB image, the scene view's RGB image (``VIEW_SIZE``) and the latest (6,)
        wrench sample."""
        self.wrenches.append(np.asarray(wrench, dtype=float))
        side = VIEW_SIZE[1]
        policy = cv2.resize(policy_image, (side, side), interpolation=cv2.INTER_NEAREST)
        images = np.concatenate([policy, view], axis=1)[:, :, ::-1]  # RGB -> BGR, as OpenCV writes
        frame = np.concatenate([images, self.wrench_strip()], axis=0)
        self.writer.write(np.ascontiguousarray(frame))

    def wrench_strip(self) -> np.ndarray:
        """Forces and torques so far, one polyline per axis, over the episode's step limit."""
        width = self.size[0]
        strip = np.full((STRIP_HEIGHT, width, 3), 255, dtype=np.uint8)
        history = np.array(self.wrenches)
        half = STRIP_HEIGHT // 2
        x = np.arange(len(history)) * (width - 1) / max(self.steps, 1)
        for part, (quantity, unit, floor) in enumerate(zip(("force", "torque"), ("N", "Nm"), MIN_SCALE, strict=True)):
            values = history[:, 3 * part : 3 * part + 3]
            scale = max(float(np.abs(values).max()), floor)
            middle = part * half + half // 2
            cv2.line(strip, (0, middle), (width - 1, middle), (200, 200, 200), 1)
            for axis, colour in enumerate(AXIS_COLOURS):
                y = middle - values[:, axis] / scale * (half // 2 - 4)
                points = np.stack([x, y], axis=1).round().astype(np.int32)
                cv2.polylines(strip, [points], False, colour, 1, cv2.LINE_AA)
            put_text(strip, f"{quantity} +-{scale:.3g} {unit}", (4, part * half + 12), (0, 0, 0))
        for axis, (name, colour) in enumerate(zip("xyz", AXIS_COLOURS, strict=True)):
            put_text(strip, name, (width - 36 + 12 * axis, 12), colour)
        return strip

    def close(self) -> None:
        self.writer.release()

    def __enter__(self) -> EpisodeVideo:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
