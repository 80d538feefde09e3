"""Whether workers pinned to nodes (configs/cluster.yaml's `resources`) can ever start on the running Ray cluster.

Ray puts all of one worker's or actor's resources on one node. A cluster whose totals suffice may still have no node
that holds a worker: the node that advertises the pin (`ray start --resources='{"learner_node": 2}'`) has too few
CPUs or GPUs, or advertises too little of the pin. Ray then lets the rest wait for ever without a word; these name
the pin, what each node holds, and the `ray start` line that advertises it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

BUILT_IN = ("CPU", "GPU", "memory", "object_store_memory")
HEAD = "HEAD:6379"


def start_line(resources: Mapping[str, float]) -> str:
    """The `ray start` that has a node join the cluster advertising `resources`."""
    amounts = {name: int(amount) if float(amount).is_integer() else amount for name, amount in resources.items()}
    return f"ray start --address={HEAD} --resources='{json.dumps(amounts)}'"


def node_resources() -> list[tuple[str, dict[str, float]]]:
    """(address, total resources) of each alive node of the running Ray."""
    import ray

    return [(node["NodeManagerAddress"], dict(node["Resources"])) for node in ray.nodes() if node["Alive"]]


def holds(each: Mapping[str, float], node: Mapping[str, float]) -> int:
    """How many workers asking for `each` one node holds, by its totals."""
    return min((math.floor(node.get(name, 0.0) / amount + 1e-9) for name, amount in each.items() if amount > 0), default=1 << 30)


def unplaceable(each: Mapping[str, float], count: int, who: str, per_node: int = 1) -> str | None:
    """Why `count` workers asking for `each` can never all start on the running cluster's nodes, or None when they can.
    Where the cluster as a whole lacks CPUs or GPUs, None too: the callers' own checks name those settings. `per_node`:
    how much of a pin one node of the group advertises (its GPUs), for the `ray start` line."""
    nodes = node_resources()
    held = sum(holds(each, resources) for _, resources in nodes)
    if held >= count:
        return None
    pinned = {name: amount for name, amount in each.items() if name not in BUILT_IN}  # what `ray start --resources` advertises
    total = {name: sum(resources.get(name, 0.0) for _, resources in nodes) for name in each}
    short = [name for name, amount in pinned.items() if total[name] + 1e-9 < amount * count]
    if short:
        advertised = ", ".join(f"{total[name]:g} {name}" for name in short)
        return (f"{who} ask for {_amounts(each)} each and the cluster's nodes advertise only {advertised} in all (each node "
                f"of the group joins with `{start_line({name: pinned[name] * per_node for name in short})}`)")
    if any(total[name] + 1e-9 < amount * count for name, amount in each.items()):
        return None
    where = [(address, resources) for address, resources in nodes if all(name in resources for name in pinned)]
    named = f"the nodes that advertise {' and '.join(pinned)}" if pinned else "the cluster's nodes"
    listed = "; ".join(f"{address}: " + ", ".join(f"{resources.get(name, 0.0):g} {name}" for name in each) for address, resources in where)
    return (f"{who} ask for {_amounts(each)} each, all of it on one node, and {named} hold {held} of them ({listed or 'none'})")


def largest_fitting(each: Mapping[str, float], name: str, count: int) -> float | None:
    """The largest amount of `name` (CPU) per worker at which `count` workers of `each` fit on the nodes by their totals."""
    nodes = [resources for _, resources in node_resources()]
    options = sorted({math.floor(resources.get(name, 0.0) / share * 100) / 100 for resources in nodes for share in range(1, count + 1)}, reverse=True)
    return next((amount for amount in options if amount > 0 and sum(holds({**each, name: amount}, node) for node in nodes) >= count), None)


def _amounts(each: Mapping[str, float]) -> str:
    return ", ".join(f"{name}={amount:g}" for name, amount in each.items())


def cpus_of_nodes_with(pinned: Mapping[str, float]) -> float:
    """The CPUs of the alive nodes that advertise every resource of `pinned` (of all nodes when it is empty): what
    workers pinned there share."""
    return sum(resources.get("CPU", 0.0) for _, resources in node_resources() if all(name in resources for name in pinned))
