"""The generate front over GenerationActors: an actor killed in the middle of a streamed answer is restarted and the
call re-run (`max_task_retries`); Ray passes on only the pieces past those already read, so the re-run must sample the
same text: the streamed pieces of an unseeded request are its completion's text, not two samples spliced together."""

from __future__ import annotations

import asyncio

from actors.engines.types import Completion, GenerationRequest
from actors.settings import load_actor_settings


def test_an_actor_killed_mid_stream_streams_one_answer(serve_url, tiny_model, tmp_path):
    import ray

    from actors.actor import CONTROL_GROUP, start_actors
    from serve_apps.generate.service import ActorsBackend

    settings = load_actor_settings(assignments=[("actors.engine", "transformers"), ("actors.model", str(tiny_model)),
                                                ("actors.num_cpus", 0), ("actors.sandbox_workers", 1),
                                                ("actors.lake", str(tmp_path / "lake"))])
    (actor,) = start_actors(settings)
    backend = ActorsBackend.__new__(ActorsBackend)  # its actors found by name elsewhere; here, this one
    backend.actors = [actor]
    request = GenerationRequest(prompt="def f", max_tokens=3000, ignore_eos=True, temperature=1.0)  # no seed
    first_pid = ray.get(actor.health.options(concurrency_group=CONTROL_GROUP).remote(), timeout=60)["pid"]

    async def read() -> tuple[list[str], Completion]:
        pieces: list[str] = []
        async for item in backend.stream_text(request):
            if isinstance(item, Completion):
                return pieces, item
            pieces.append(item)
            if len(pieces) == 20:
                ray.kill(actor, no_restart=False)  # as a crash would: Ray restarts it and re-runs the call
        raise AssertionError("the stream ended without its completion")

    try:
        pieces, completion = asyncio.run(read())
        restarted_pid = ray.get(actor.health.options(concurrency_group=CONTROL_GROUP).remote(), timeout=60)["pid"]
    finally:
        ray.kill(actor, no_restart=True)
    assert restarted_pid != first_pid and completion.finish_reason == "length"
    assert "".join(pieces) == completion.text
