import numpy as np
import pytest

from cbpqsnn.data.events import make_events
from cbpqsnn.data.files import atomic_write, natural_key
from cbpqsnn.data.frame_cache import FrameCache
from cbpqsnn.data.frames import FrameSpec, events_to_frames, frame_index
from tests.data.fabricate import random_events


def _events(n: int, width: int = 34, height: int = 34, seed: int = 0) -> np.ndarray:
    ev = random_events(n, width, height, seed)
    return make_events(ev["x"], ev["y"], ev["p"], ev["t"])


def test_equal_count_frames_hold_every_event_and_the_last_frame_takes_the_remainder():
    frames = events_to_frames(_events(103), FrameSpec.make(4, (34, 34), None))
    assert frames.shape == (4, 2, 34, 34)
    assert frames.sum(axis=(1, 2, 3)).tolist() == [25, 25, 25, 28]
    assert frame_index(5, 16).tolist() == [15] * 5  # fewer events than frames: all in the last


def test_each_event_is_counted_at_its_frame_polarity_and_pixel():
    events = make_events(x=[0, 5, 5, 33], y=[1, 2, 2, 0], p=[0, 1, 1, 0], t=[10, 20, 30, 40])
    frames = events_to_frames(events, FrameSpec.make(2, (34, 34), None))
    assert frames[0, 0, 1, 0] == 1 and frames[0, 1, 2, 5] == 1
    assert frames[1, 1, 2, 5] == 1 and frames[1, 0, 0, 33] == 1
    assert frames.sum() == 4


def test_unordered_timestamps_are_sorted_before_slicing():
    events = make_events(x=[3, 1, 2, 0], y=[0, 0, 0, 0], p=[1, 1, 1, 1], t=[40, 10, 30, 20])
    frames = events_to_frames(events, FrameSpec.make(4, (34, 34), None))
    assert [int(np.argmax(frames[i, 1, 0])) for i in range(4)] == [1, 0, 2, 3]


@pytest.mark.parametrize("size", [64, 48, 17])
def test_downsampling_bins_coordinates_and_conserves_event_counts(size):
    events = _events(5000, 128, 128)
    frames = events_to_frames(events, FrameSpec.make(16, (128, 128), size))
    full = events_to_frames(events, FrameSpec.make(16, (128, 128), None))
    assert frames.shape == (16, 2, size, size)
    assert frames.sum() == full.sum() == 5000
    assert np.array_equal(frames.sum(axis=(2, 3)), full.sum(axis=(2, 3)))  # same events per frame
    if 128 % size == 0:  # sum pooling of k x k pixel blocks
        k = 128 // size
        assert np.array_equal(frames, full.reshape(16, 2, size, k, size, k).sum(axis=(3, 5)))


def test_events_outside_the_sensor_and_empty_recordings_are_rejected():
    spec = FrameSpec.make(4, (34, 34), None)
    with pytest.raises(ValueError, match="outside"):
        events_to_frames(make_events(x=[34], y=[0], p=[0], t=[0]), spec)
    with pytest.raises(ValueError, match="no events"):
        events_to_frames(make_events(x=[], y=[], p=[], t=[]), spec)
    with pytest.raises(ValueError):
        FrameSpec.make(4, (34, 34), 40)
    with pytest.raises(ValueError):
        FrameSpec.make(0, (34, 34), None)


def test_cache_folder_changes_with_every_parameter_that_changes_the_frames(tmp_path):
    def folder(dataset="nmnist", T=16, size=None):
        return FrameCache(tmp_path, dataset, FrameSpec.make(T, (34, 34), size)).folder

    assert folder() == folder()
    assert len({folder(), folder(T=8), folder(size=17), folder(dataset="other")}) == 4
    cache = FrameCache(tmp_path, "nmnist", FrameSpec.make(16, (34, 34), None))
    # entries are named after the source file and its size: another file never shares one
    assert cache.entry("Train/3/00012.bin", 100) != cache.entry("Train/3/00012.bin", 105)
    assert cache.entry("Train/3/00012.bin", 100) != cache.entry("Test/3/00012.bin", 100)


def test_cache_round_trip_and_unreadable_entry_is_a_miss(tmp_path):
    cache = FrameCache(tmp_path, "nmnist", FrameSpec.make(2, (34, 34), None))
    entry = cache.entry("Train/0/00001.bin", 10)
    assert cache.load(entry) is None
    frames = np.arange(2 * 2 * 34 * 34, dtype=np.uint16).reshape(2, 2, 34, 34)
    cache.save(entry, frames)
    assert np.array_equal(cache.load(entry), frames)
    assert (cache.folder / "params.json").is_file()
    entry.write_bytes(b"garbage")
    assert cache.load(entry) is None


def test_atomic_write_leaves_nothing_behind_when_writing_fails(tmp_path):
    target = tmp_path / "entry.npz"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write(b"half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_write(target) as handle:
        handle.write(b"whole")
    assert target.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [target]


def test_natural_order_compares_numbers_as_numbers():
    names = ["c_10", "c_2", "c_1"]
    assert sorted(names, key=natural_key) == ["c_1", "c_2", "c_10"]
