"""Array work on threads gives exactly what the same work gives on one thread."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from scipy import ndimage

from sirtreg.errors import InputError
from sirtreg.geometry import Grid, LabelVolume, Volume
from sirtreg.parallel import in_parallel, worker_pool, workers
from sirtreg.resample import GridPoints, map_coordinates_threaded, sample_at, sample_one_hot


def test_jobs_return_in_order_and_the_first_error_is_raised():
    assert in_parallel([lambda i=i: i * i for i in range(20)]) == [i * i for i in range(20)]
    assert in_parallel([]) == []
    finished = []

    def fails() -> None:
        raise ValueError("job 3 failed")

    def slow() -> None:
        threading.Event().wait(0.2)
        finished.append("slow")

    with pytest.raises(ValueError, match="job 3 failed"):
        in_parallel([slow, fails, slow])
    # on threads every job has started and is waited for (nothing runs on behind the error); on one thread
    # the jobs after the failing one never start
    assert finished == (["slow", "slow"] if workers() > 1 else ["slow"])
    assert 1 <= workers() <= 8


def test_threaded_interpolation_equals_one_call_of_scipy():
    rng = np.random.default_rng(3)
    array = rng.normal(size=(30, 40, 50)).astype(np.float32)
    coords = (rng.uniform(-2, 1, (3, 2_500_000)) * np.array([[30], [40], [50]])).astype(np.float32)  # several blocks
    for order in (0, 1):
        expected = ndimage.map_coordinates(array, coords, order=order, mode="nearest", prefilter=False)
        assert np.array_equal(map_coordinates_threaded(array, coords, order=order), expected)


def test_points_located_once_sample_like_points_given_each_time():
    grid = Grid((20, 18, 16), (1.5, 1.0, 2.0), (-5.0, 3.0, 1.0))
    rng = np.random.default_rng(4)
    points = grid.world_coordinates(np.float64) + rng.normal(0, 3, (*grid.shape, 3))
    image = Volume(rng.normal(size=grid.shape).astype(np.float32), grid)
    labels = LabelVolume((rng.uniform(size=grid.shape) * 3).astype(np.uint8), grid)
    located = GridPoints.locate(grid, points)
    assert located.coords.dtype == np.float32 and located.shape == grid.shape
    assert np.array_equal(sample_at(image, located, fill_value=-7.0), sample_at(image, points, fill_value=-7.0))
    assert np.array_equal(sample_one_hot(labels, located), sample_one_hot(labels, points))
    assert np.any(sample_at(image, located, fill_value=-7.0) == -7.0)  # some points fall outside: the fill value
    with pytest.raises(InputError, match="cannot sample a volume"):
        sample_at(Volume(np.zeros((4, 4, 4), np.float32), Grid((4, 4, 4))), located)
    with pytest.raises(InputError, match="do not cover"):
        GridPoints.from_blocks(grid, grid.shape, [(0, 10, lambda: points.reshape(-1, 3)[:10])])


def test_a_worker_pool_waits_for_its_jobs_on_a_normal_exit():
    done = []
    with worker_pool(2) as pool:
        for index in range(6):
            pool.submit(lambda i=index: (time.sleep(0.01), done.append(i)))
    assert sorted(done) == list(range(6))


def test_an_interrupted_worker_pool_does_not_wait_for_a_blocked_job(monkeypatch):
    # as a worker blocked for good on the import lock that an interrupted import left held
    monkeypatch.setattr("sirtreg.parallel.INTERRUPTED_WAIT_S", 0.2)
    release = threading.Event()
    started = threading.Event()
    ran = []
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with worker_pool(1) as pool:
            pool.submit(lambda: (started.set(), release.wait(30)))
            queued = pool.submit(lambda: ran.append("queued"))
            started.wait(5)
            raise KeyboardInterrupt
    assert time.monotonic() - start < 5  # not the 30 s the blocked job would take
    assert queued.cancelled() and not ran
    release.set()


def test_a_worker_pool_left_by_an_error_waits_for_its_running_jobs():
    finished = []
    with pytest.raises(ValueError):
        with worker_pool(1) as pool:
            pool.submit(lambda: (time.sleep(0.2), finished.append(True)))
            time.sleep(0.02)
            raise ValueError("a job's caller failed")
    assert finished == [True]
