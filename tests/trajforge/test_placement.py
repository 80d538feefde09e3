"""Placement on a cluster of several nodes (configs/cluster.yaml's pins): a head, a 1-CPU learner node advertising
`learner_node: 2` and a 1-CPU actor node advertising `actor_node: 1`, as `ray start --resources` makes them.

Workers that no node can hold are named before they start (Ray would let them wait for ever without a word), and the
learner's CPU workers ask for a share of the learner node's CPUs, not of the whole cluster's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
from helpers import REPO

# A ray.cluster_utils.Cluster in the test process changes that process's Ray state (its internal-KV client, the
# machine's /tmp/ray/ray_current_cluster), which the session's own Ray and the serve-on-cluster tests after it share: a
# clean-clone `make test` ended inside them. Run apart until the cluster lives in a subprocess of its own:
#   TRAJFORGE_MULTINODE_TESTS=1 .venv/bin/python -m pytest tests/trajforge/test_placement.py
pytestmark = pytest.mark.skipif(not os.environ.get("TRAJFORGE_MULTINODE_TESTS"),
                                reason="multi-node placement: TRAJFORGE_MULTINODE_TESTS=1 pytest tests/trajforge/test_placement.py")

DRIVER = """
import json, logging
from actors.actor import start_actors
from actors.settings import ActorSettings
from learner.settings import LearnerSettings
from learner.train import placement, refuse_unplaceable
from trajforge.cluster import init_ray, load_cluster_settings
from trajforge.errors import TrajforgeError
import ray

init_ray()
cluster, said = load_cluster_settings(), []
logging.getLogger("actors.actor").addHandler(type("Said", (logging.Handler,), {"emit": lambda self, record: said.append(record.getMessage())})())
learner = {}
for name, workers in {"auto": {}, "wide": {"cpus_per_worker": 0.75}, "many": {"count": 3, "cpus_per_worker": 0.1}}.items():
    on_gpu, count, resources = placement(LearnerSettings.model_validate({"workers": {"count": 2, "device": "cpu", **workers}}), cluster)
    try:
        refuse_unplaceable(resources, count, on_gpu, cluster.learner.gpus_per_node or count)
        learner[name] = {"resources": resources, "refused": None}
    except TrajforgeError as exc:
        learner[name] = {"resources": resources, "refused": str(exc)}
for actor in start_actors(ActorSettings(count=2, num_cpus=0.5), wait=False, cluster=cluster):
    ray.kill(actor, no_restart=True)
print(json.dumps({"learner": learner, "actors": said}))
"""


@pytest.fixture(scope="module")
def three_nodes() -> Iterator[str]:
    """The head (1 CPU), the learner node and the actor node; yields the GCS address."""
    from ray.cluster_utils import Cluster

    temp_dir = f"/tmp/rp{os.getpid()}"  # short: Ray's socket paths are length-limited
    cluster = Cluster(initialize_head=True, shutdown_at_exit=False,
                      head_node_args={"num_cpus": 1, "include_dashboard": False, "temp_dir": temp_dir})
    try:
        cluster.add_node(num_cpus=1, resources={"learner_node": 2})
        cluster.add_node(num_cpus=1, resources={"actor_node": 1})
        cluster.wait_for_nodes()
        yield cluster.address
    finally:
        # Cluster.shutdown() less its reset of this process's internal KV client, which the session's own Ray (the serve
        # fixture's) still needs (later tests failed on `_internal_kv_get` of None): the nodes, then the address file
        # (/tmp/ray/ray_current_cluster) the head wrote, which a later `ray.init()` on this machine would join
        import ray

        for node in [*cluster.worker_nodes, cluster.head_node]:
            cluster.remove_node(node)
        ray._common.utils.reset_ray_address()
        ray._private.services.find_gcs_addresses.cache_clear()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def told(three_nodes) -> dict:
    """What a driver on the head node is told (run apart: this process may hold a Ray of its own)."""
    done = subprocess.run([sys.executable, "-c", DRIVER], cwd=REPO, env={**os.environ, "RAY_ADDRESS": three_nodes}, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_cpu_learner_workers_share_the_learner_nodes_cpus_not_the_clusters(told):
    """Two workers took 3 CPUs / 4 = 0.75 each, 1.5 on a 1-CPU learner node: Ray Train waited for ever."""
    auto = told["learner"]["auto"]
    assert auto["resources"] == {"CPU": 0.25, "learner_node": 1.0} and auto["refused"] is None


@pytest.mark.slow
def test_learner_workers_no_node_can_hold_are_refused_naming_the_node_and_a_value_that_fits(told):
    wide = told["learner"]["wide"]["refused"]
    assert ("the learner's workers (2) ask for CPU=0.75, learner_node=1 each, all of it on one node, and the nodes that advertise "
            "learner_node hold 1 of them (") in wide
    assert "1 CPU, 2 learner_node), so Ray Train would wait for ever: lower learner.workers.cpus_per_worker (--set learner.workers.cpus_per_worker=0.5 fits)" in wide
    many = told["learner"]["many"]["refused"]
    assert ("the cluster's nodes advertise only 2 learner_node in all (each node of the group joins with "
            """`ray start --address=HEAD:6379 --resources='{"learner_node": 2}'`)""") in many


@pytest.mark.slow
def test_more_generation_actors_than_the_actor_nodes_advertise_say_so_before_they_wait(told):
    assert len(told["actors"]) == 1
    assert ("the generation actors (2) ask for CPU=0.5, actor_node=1 each and the cluster's nodes advertise only 1 actor_node in all "
            """(each node of the group joins with `ray start --address=HEAD:6379 --resources='{"actor_node": 1}'`)""") in told["actors"][0]


INGEST_DRIVER = """
import json, sys
import ray
from ray import serve
from ray._private.state import actors  # the GCS's table: this cluster runs no dashboard for ray.util.state
from serve_apps.ingest.app import build
from serve_apps.ingest.settings import IngestSettings

ray.init()
serve.start(http_options={"host": "127.0.0.1", "port": 0})
settings = IngestSettings(lake=sys.argv[1], num_replicas=3, num_cpus=0.1, key_file=sys.argv[1] + "/test.key")
serve.run(build(settings), name="ingest", route_prefix="/")
head = next(node["NodeID"] for node in ray.nodes() if "node:__internal_head__" in node["Resources"])
replicas = [a["Address"]["NodeID"] for a in actors().values() if a["State"] == "ALIVE" and "IngestService" in a["ActorClassName"] + (a.get("Name") or "")]
serve.shutdown()
print(json.dumps({"head": head, "replicas": replicas}))
"""


@pytest.mark.slow
def test_ingest_replicas_run_on_the_head_node_whose_disk_holds_the_lake(three_nodes, tmp_path):
    """Serve spread 3 replicas over the head, learner and actor nodes: each would append envelopes to its own disk."""
    done = subprocess.run([sys.executable, "-c", INGEST_DRIVER, str(tmp_path / "lake")], cwd=REPO, env={**os.environ, "RAY_ADDRESS": three_nodes},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    placed = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(placed["replicas"]) == 3 and set(placed["replicas"]) == {placed["head"]}
