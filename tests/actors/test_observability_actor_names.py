"""What the Ray dashboard's actor list and the driver's log prefixes call a generation actor: Ray shows an actor's
`repr` there (its Repr column; `(GenerationActor(index=1) pid=...)` before its log lines) where the class defines one,
else only the class name, the same for every actor of a rollout."""

from __future__ import annotations

from helpers import actor_repr_names


def test_each_generation_actor_is_named_by_its_index_in_the_ray_dashboard(serve_url, small_model, tmp_path):
    import ray

    from actors.actor import start_actors
    from actors.settings import load_actor_settings

    settings = load_actor_settings(assignments=[("actors.model", str(small_model)), ("actors.num_cpus", 0), ("actors.sandbox_workers", 1),
                                                ("actors.count", 2), ("actors.lake", str(tmp_path / "lake"))])
    actors = start_actors(settings)
    try:
        names = actor_repr_names(actors)
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
    assert names == ["GenerationActor(index=0)", "GenerationActor(index=1)"]
