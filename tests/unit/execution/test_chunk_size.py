"""How many fast tasks the worker pool sends one worker at once."""

from pythagoras_p2p.defaults import POOL_BATCH_SECONDS, POOL_MAX_CHUNK
from pythagoras_p2p.execution.feeding import chunk_size


def test_a_chunk_takes_about_the_batch_seconds_at_the_mean_duration():
    assert chunk_size(POOL_BATCH_SECONDS / 5, 10_000, 2) == 5
    assert chunk_size(POOL_BATCH_SECONDS / 40, 10_000, 2) == 40


def test_trivial_calls_are_capped_and_a_slow_mean_sends_one_at_a_time():
    assert chunk_size(1e-6, 10_000, 2) == POOL_MAX_CHUNK
    assert chunk_size(0.0, 10_000, 2) == POOL_MAX_CHUNK
    assert chunk_size(POOL_BATCH_SECONDS * 3, 10_000, 2) == 1


def test_the_last_tasks_are_split_among_the_workers():
    assert chunk_size(1e-6, 40, 2) == 10  # an even share of half the queue
    assert chunk_size(1e-6, 3, 2) == 1
    assert chunk_size(1e-6, 0, 2) == 1
