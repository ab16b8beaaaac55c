"""Event recordings -> frames ``[T, 2, H, W]`` by equal event count, with optional downsampling.

Framing rule (SpikingJelly's ``split_by='number'``, the one the SEW/PLIF DVS pipelines use): the
N time-ordered events are cut into T consecutive slices of ``d = N // T`` events; slice ``i``
holds events ``[i d, (i + 1) d)`` and the last slice also takes the ``N mod T`` left over, so
every event lands in exactly one frame (sum of all frame counts = N). Frame ``[i, p, y, x]``
counts the events of slice ``i`` with polarity ``p`` (0 = off, 1 = on) at pixel ``(x, y)``.

Downsampling bins event coordinates, ``x' = x * w // W`` (likewise y): a sum pooling of the
sensor's pixels when ``W`` is a multiple of ``w``, unequal 2-3 pixel bins otherwise (128 -> 48);
event counts are conserved either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FRAMING_VERSION = 1  # bump when the rule above changes: it is part of every cache key


@dataclass(frozen=True)
class FrameSpec:
    """How recordings become frames: ``T`` frames of equal event count from a ``sensor`` of
    ``(H, W)`` pixels, binned to ``size`` ``(h, w)`` (``size == sensor``: no downsampling)."""

    T: int
    sensor: tuple[int, int]
    size: tuple[int, int]

    @classmethod
    def make(cls, T: int, sensor: tuple[int, int], size: int | None) -> FrameSpec:
        """``size``: output side in pixels (square), or ``None`` for the sensor's resolution."""
        if T < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        out = tuple(sensor) if size is None else (int(size), int(size))
        if not all(0 < o <= s for o, s in zip(out, sensor, strict=True)):
            raise ValueError(f"frame size {size} must be between 1 and the sensor size {sensor}")
        return cls(int(T), (int(sensor[0]), int(sensor[1])), (int(out[0]), int(out[1])))

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.T, 2, *self.size)

    def key(self) -> dict[str, object]:
        """Every parameter that changes the frames (for the cache key)."""
        return {"T": self.T, "sensor": list(self.sensor), "size": list(self.size),
                "framing": FRAMING_VERSION}


def frame_index(n_events: int, T: int) -> np.ndarray:
    """Frame of each of ``n_events`` time-ordered events under the equal-count rule."""
    per_frame = n_events // T
    if per_frame == 0:
        return np.full(n_events, T - 1, dtype=np.int64)
    return np.minimum(np.arange(n_events, dtype=np.int64) // per_frame, T - 1)


def events_to_frames(events: np.ndarray, spec: FrameSpec) -> np.ndarray:
    """Frames ``[T, 2, h, w]`` (``uint16``, or ``int32`` if a count exceeds 65,535) from a
    structured array with fields ``x, y, p, t``. Raises ``ValueError`` for an empty recording or
    events outside the sensor."""
    n = len(events)
    if n == 0:
        raise ValueError("the recording has no events")
    t = np.asarray(events["t"])
    if np.any(t[1:] < t[:-1]):
        events = events[np.argsort(t, kind="stable")]
    x = np.asarray(events["x"]).astype(np.int64)
    y = np.asarray(events["y"]).astype(np.int64)
    p = (np.asarray(events["p"]) > 0).astype(np.int64)
    (H, W), (h, w) = spec.sensor, spec.size
    if x.min() < 0 or y.min() < 0 or x.max() >= W or y.max() >= H:
        raise ValueError(f"event coordinates x {x.min()}..{x.max()}, y {y.min()}..{y.max()} lie outside "
                         f"the {W}x{H} sensor")
    if (h, w) != (H, W):
        x, y = x * w // W, y * h // H
    flat = ((frame_index(n, spec.T) * 2 + p) * h + y) * w + x
    counts = np.bincount(flat, minlength=spec.T * 2 * h * w).reshape(spec.shape)
    return counts.astype(np.uint16 if counts.max() < 2**16 else np.int32)
