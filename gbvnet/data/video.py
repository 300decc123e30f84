"""Frames from face videos at given times, and face crops, at the speed of one pass over the video.

Face detector (a deliberate choice): OpenCV's frontal-face Haar cascade, which ships inside the
``opencv-python-headless<5`` wheel. It runs offline on CPU and needs no model download; its limit is frontal,
reasonably lit faces, which is what DEAP and MAHNOB-HCI's frontal cameras record.

Speed at camera size (DEAP 720x576 at 50 fps, MAHNOB 780x580 at ~60 fps): a video is read once, in order, by
one decoding thread (the parallelism is across videos: worker processes and video threads); frames nobody asked
for are only grabbed (demuxed and decoded, never converted to an image), sampled frames are retrieved. The
decoding runs in a thread of its own, a few sampled frames ahead of the face search (both release the GIL), so a
video takes as long as decoding it, not decoding plus searching. The detector never sees a full-size frame:

* tracking: where the previous sampled frame had a face, it is looked for in a region around that box (1.7 times
  its size), scaled so the face is ~``TRACK_FACE`` px wide, at sizes within 0.8-1.25x the last one (coarser
  scale steps: the size is nearly known);
* detection: otherwise (the first frame, or the face was lost) in the whole frame, grey, scaled so its shorter
  side is ``DETECT_SIDE`` px (never up); the smallest face found is 1/8 of the frame's shorter side.

Boxes are mapped back to full resolution, so each crop is cut from the full-size frame at its own sampled
time. The largest detection is cropped with a margin and resized to a square. Fallback when no face is found:
the last box detected in the same video (a face rarely moves far between sampled frames); before any detection,
a centred square crop. Every fallback is counted, and a video where more than ``FALLBACK_WARN`` of the sampled
frames had none is warned about (its crops are mostly not faces).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gbvnet.data.prefetch import read_ahead
from gbvnet.data.records import DataError

CASCADE = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
SYNC_TOLERANCE = 2.0  # seconds a video may be shorter / longer than expected before read_frames warns
DETECT_SIDE = 192  # px: a frame's shorter side when the whole frame is searched
TRACK_FACE = 32  # px: the tracked face's width in the region searched around the last box
FALLBACK_WARN = 0.2  # share of a video's sampled frames without a detection above which it is warned about

Box = tuple[int, int, int, int]  # x, y, width, height in full-resolution pixels


def _frames(path: str | Path, times: np.ndarray, span: tuple[float, float] | None,
            tolerance: float) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(positions in times, BGR frame)`` for each distinct frame asked for, in video order (one pass)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "missing video")
    cap = cv2.VideoCapture(str(path), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, 1])
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
                          f"{span[1]:.1f} s) of the trial recording; check the video/signal sync", stacklevel=3)
        wanted = np.clip(np.floor(np.asarray(times, dtype=np.float64) * fps).astype(np.int64), 0, count - 1)
        position = -1  # the last grabbed frame
        for frame in np.unique(wanted):
            while position < frame and cap.grab():  # frames in between: grabbed, never retrieved
                position += 1
            if frame - position > max(1.0, fps):  # the header promised more than a second that is not there
                raise DataError(path, f"video ended at frame {position}, before frame {int(frame)} (header "
                                      f"says {count} frames)")
            ok, image = cap.retrieve() if position >= 0 else (False, None)
            if not ok:
                raise DataError(path, f"cannot decode frame {max(position, 0)}")
            yield np.flatnonzero(wanted == frame), image
    finally:
        cap.release()


@contextmanager
def opencv_threads(n: int):
    """OpenCV's own thread count set to ``n`` inside the block (process-wide), restored after: the face path
    runs many small detections, where one thread beats a pool's hand-offs, and its parallelism is per video."""
    previous = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


def read_frames(path: str | Path, times: np.ndarray, span: tuple[float, float] | None = None,
                tolerance: float = SYNC_TOLERANCE) -> np.ndarray:
    """RGB frames (``len(times)`` x H x W x 3, uint8) at ``times`` seconds from the video's start.

    The frame shown at time ``t`` is frame ``floor(t * fps)``. Frames are read in one sequential pass (times
    need not be sorted); times before the start take the first frame, times past the end the last one.
    ``span = (needed, longest)``: a video shorter than ``needed`` or longer than ``longest`` seconds by more
    than ``tolerance`` seconds triggers a warning (its sync with the signals is then doubtful).
    """
    out: list[np.ndarray | None] = [None] * len(times)
    for positions, image in _frames(path, times, span, tolerance):
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        for i in positions:
            out[i] = rgb
    if not out:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.stack(out)


class FaceTracker:
    """The face box of successive frames of one video (see the module docstring): tracked near the last box,
    searched for in a downscaled grey frame when lost. Make one per video."""

    def __init__(self):
        self._detector = cv2.CascadeClassifier(str(CASCADE))
        if self._detector.empty():
            raise RuntimeError(f"cannot load the Haar cascade {CASCADE}")
        self.last: Box | None = None

    def _search(self, grey: np.ndarray, scale: float, min_side: int, max_side: int | None = None,
                step: float = 1.1) -> Box | None:
        """The largest face in ``grey`` scaled by ``scale`` (sides in scaled pixels, sizes ``step`` apart), in
        ``grey``'s pixels."""
        small = grey if scale == 1 else cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        faces = self._detector.detectMultiScale(small, step, 3, minSize=(min_side, min_side),
                                                maxSize=(max_side, max_side) if max_side else None)
        if not len(faces):
            return None
        x, y, w, h = max(faces, key=lambda b: b[2] * b[3])
        return int(x / scale), int(y / scale), int(round(w / scale)), int(round(h / scale))

    def find(self, frame: np.ndarray) -> Box | None:
        """The face box in ``frame`` (BGR, full size), or None; remembered for the next frame."""
        height, width = frame.shape[:2]
        box = None
        if self.last is not None:  # tracking: a region 1.7 times the last face's size around it
            x, y, w, h = self.last
            grow = int(0.35 * w)
            x0, y0 = max(0, x - grow), max(0, y - grow)
            x1, y1 = min(width, x + w + grow), min(height, y + h + grow)
            region = cv2.cvtColor(frame[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)
            scale = min(1.0, TRACK_FACE / w)
            found = self._search(region, scale, int(0.8 * w * scale), int(1.25 * w * scale) + 1, step=1.15)
            if found is not None:
                box = (found[0] + x0, found[1] + y0, found[2], found[3])
        if box is None:  # detection in the whole frame
            scale = min(1.0, DETECT_SIDE / min(height, width))
            box = self._search(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), scale,
                               max(16, int(min(height, width) * scale) // 8))
        if box is not None:
            self.last = box
        return box


@dataclass
class VideoFaces:
    """Face crops of one video at the times asked for."""

    crops: np.ndarray  # (len(times), size, size, 3) RGB uint8
    boxes: np.ndarray  # (len(times), 4) x, y, side, side of each square crop, full-resolution pixels (before margin
    # padding); the centred square where no face was ever found
    frames: int  # crops made (len(times))
    fallbacks: int  # of those, crops of frames without a detection


def crop_square(frame: np.ndarray, square: Box, size: int) -> np.ndarray:
    """``frame[square]`` resized to ``size`` x ``size``; parts outside the frame repeat its border pixels."""
    h, w = frame.shape[:2]
    x, y, side, _ = square
    pad = max(0, -x, -y, x + side - w, y + side - h)
    if pad:
        frame = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x, y = x + pad, y + pad
    return cv2.resize(frame[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)


def face_crops(path: str | Path, times: np.ndarray, size: int, span: tuple[float, float] | None = None,
               tolerance: float = SYNC_TOLERANCE, margin: float = 0.25) -> VideoFaces:
    """The face crops (``size`` x ``size``, RGB) of the frames at ``times`` (as :func:`read_frames` maps them),
    in one pass over the video, decoded ahead in a thread of its own; warns when more than ``FALLBACK_WARN`` of
    them had no detection."""
    tracker = FaceTracker()
    crops = np.zeros((len(times), size, size, 3), np.uint8)
    boxes = np.zeros((len(times), 4), np.int64)
    frames = fallbacks = 0
    square: Box | None = None
    for positions, image in read_ahead(_frames(path, times, span, tolerance)):
        face = tracker.find(image)
        frames += len(positions)
        if face is not None:
            x, y, fw, fh = face
            side = max(fw, fh) + 2 * int(margin * max(fw, fh))
            square = (x + fw // 2 - side // 2, y + fh // 2 - side // 2, side, side)
        else:
            fallbacks += len(positions)
        h, w = image.shape[:2]
        use = square or ((w - min(h, w)) // 2, (h - min(h, w)) // 2, min(h, w), min(h, w))
        crops[positions] = cv2.cvtColor(crop_square(image, use, size), cv2.COLOR_BGR2RGB)
        boxes[positions] = use
    if frames and fallbacks > FALLBACK_WARN * frames:
        warnings.warn(f"{path}: no face found in {fallbacks} of {frames} sampled frames ({fallbacks / frames:.0%}); "
                      "their crops reuse the last face box or the frame centre. Check that the face is frontal and "
                      "at least 1/8 of the frame's shorter side", stacklevel=2)
    return VideoFaces(crops, boxes, frames, fallbacks)
