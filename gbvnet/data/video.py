"""Frames from face videos at given times, and face crops.

Face detector (a deliberate choice): OpenCV's frontal-face Haar cascade, which ships inside the
``opencv-python-headless<5`` wheel. It runs offline on CPU at hundreds of frames per second and needs no model
download; its limit is frontal, reasonably lit faces, which is what DEAP and MAHNOB-HCI's frontal cameras record.
For each frame the largest detection is cropped with a margin and resized to a square. Fallback when no face is
found: the last box detected in the same video (a face rarely moves far between sampled frames); before any
detection, a centred square crop. Every fallback is counted for the preparation report.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from gbvnet.data.records import DataError

CASCADE = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"


SYNC_TOLERANCE = 2.0  # seconds a video may be shorter / longer than expected before read_frames warns


def read_frames(path: str | Path, times: np.ndarray, span: tuple[float, float] | None = None,
                tolerance: float = SYNC_TOLERANCE) -> np.ndarray:
    """RGB frames (``len(times)`` x H x W x 3, uint8) at ``times`` seconds from the video's start.

    The frame shown at time ``t`` is frame ``floor(t * fps)``. Frames are read in one sequential pass (times
    need not be sorted); times before the start take the first frame, times past the end the last one.
    ``span = (needed, longest)``: a video shorter than ``needed`` or longer than ``longest`` seconds by more
    than ``tolerance`` seconds triggers a warning (its sync with the signals is then doubtful).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "missing video")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise DataError(path, "unreadable video (OpenCV cannot open it)")
        fps = cap.get(cv2.CAP_PROP_FPS)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if fps <= 0 or count <= 0:
            raise DataError(path, f"video reports fps={fps} and {count} frames")
        duration = count / fps
        if span is not None and not span[0] - tolerance <= duration <= span[1] + tolerance:
            warnings.warn(f"{path}: video lasts {duration:.1f} s but should cover {span[0]:.1f} s (at most "
                          f"{span[1]:.1f} s) of the trial recording; check the video/signal sync", stacklevel=2)
        wanted = np.clip(np.floor(np.asarray(times, dtype=np.float64) * fps).astype(np.int64), 0, count - 1)
        out: list[np.ndarray | None] = [None] * len(wanted)
        position, frame, decoded = -1, None, -1  # last grabbed frame; last decoded frame and its number
        for i in np.argsort(wanted, kind="stable"):
            while position < wanted[i] and cap.grab():
                position += 1
            if decoded != position:
                ok, image = cap.retrieve() if position >= 0 else (False, None)
                if not ok:
                    raise DataError(path, f"cannot decode frame {max(position, 0)}")
                frame, decoded = image, position
            if wanted[i] - position > max(1.0, fps):  # the header promised more than a second that is not there
                raise DataError(path, f"video ended at frame {position}, before frame {int(wanted[i])} (header "
                                      f"says {count} frames)")
            out[i] = frame
    finally:
        cap.release()
    if not out:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in out])


@dataclass
class FaceCropper:
    """Crop the largest frontal face of each frame to ``size`` x ``size`` (fallbacks counted)."""

    size: int
    margin: float = 0.25
    frames: int = 0
    fallbacks: int = 0
    _last: tuple[int, int, int, int] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._detector = cv2.CascadeClassifier(str(CASCADE))
        if self._detector.empty():
            raise RuntimeError(f"cannot load the Haar cascade {CASCADE}")

    def reset(self) -> None:
        """Forget the last box (call between videos)."""
        self._last = None

    def crop(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        faces = self._detector.detectMultiScale(gray, 1.1, 3, minSize=(max(16, min(h, w) // 8),) * 2)
        self.frames += 1
        if len(faces):
            x, y, fw, fh = max(faces, key=lambda b: b[2] * b[3])
            m = int(self.margin * max(fw, fh))
            side = max(fw, fh) + 2 * m
            cx, cy = x + fw // 2, y + fh // 2
            self._last = (cx - side // 2, cy - side // 2, side, side)
        else:
            self.fallbacks += 1
            if self._last is None:
                side = min(h, w)
                return cv2.resize(frame[(h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2],
                                  (self.size, self.size), interpolation=cv2.INTER_AREA)
        x, y, side, _ = self._last
        pad = max(0, -x, -y, x + side - w, y + side - h)
        if pad:
            frame = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            x, y = x + pad, y + pad
        return cv2.resize(frame[y:y + side, x:x + side], (self.size, self.size), interpolation=cv2.INTER_AREA)
