"""Waiting for the workers' resources on a busy cluster (a Serve app holding the CPUs): said at once, not after the timeout."""

from __future__ import annotations

import logging

import pytest
import ray

from learner.train import wait_for_resources
from trajforge.errors import TrajforgeError


@pytest.fixture
def busy(monkeypatch):
    """A 2-CPU cluster of which `free` (a list, popped per look) is free; sleeping costs nothing."""
    free = [{"CPU": 0.25}]
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(ray, "available_resources", lambda: free.pop(0) if len(free) > 1 else free[0])
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    return free


def test_a_wait_for_taken_resources_is_said_once_and_ends_when_they_are_free(busy, caplog):
    busy[:] = [{"CPU": 0.25}, {"CPU": 0.25}, {"CPU": 2.0}]
    with caplog.at_level(logging.WARNING, logger="learner.train"):
        wait_for_resources({"CPU": 0.5}, 2, False, timeout_s=60)
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 1 and "need {'CPU': 1.0} and only {'CPU': 0.25} is free: waiting up to 60 s" in said[0]
    assert "a lower learner.workers.cpus_per_worker may start now" in said[0]


def test_resources_that_stay_taken_are_said_at_once_then_refused_at_the_timeout(busy, caplog):
    with caplog.at_level(logging.WARNING, logger="learner.train"), pytest.raises(TrajforgeError, match="after 0 s only"):
        wait_for_resources({"CPU": 0.5}, 2, False, timeout_s=0)
    assert "waiting up to 0 s" in caplog.text


def test_free_resources_start_at_once_without_a_word(busy, caplog):
    busy[:] = [{"CPU": 2.0}]
    with caplog.at_level(logging.WARNING, logger="learner.train"):
        wait_for_resources({"CPU": 0.5}, 2, False, timeout_s=60)
    assert caplog.text == ""


@pytest.mark.parametrize(("gpus", "hint"), [(0.0, "it has no GPU: learner.workers.device=auto (or cpu) trains on the CPU"),
                                             (1.0, "lower learner.workers.count to its GPUs (learner.workers.device=auto does)")])
def test_gpu_workers_on_a_cluster_short_of_gpus_are_told_the_gpu_fix(monkeypatch, gpus, hint):
    """learner.workers.device=gpu on a CPU machine was told to 'lower learner.workers.count or cpus_per_worker'."""
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": gpus})
    with pytest.raises(TrajforgeError) as refused:
        wait_for_resources({"CPU": 4.0}, 2, True, timeout_s=0)
    assert str(refused.value).endswith(hint) and "cpus_per_worker" not in str(refused.value)


def test_workers_short_of_cpus_are_told_to_ask_for_fewer(monkeypatch):
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    with pytest.raises(TrajforgeError, match="lower learner.workers.count or cpus_per_worker$"):
        wait_for_resources({"CPU": 4.0}, 2, False, timeout_s=0)
