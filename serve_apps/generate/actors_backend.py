"""The generate front's `actors` backend: requests go to the named GenerationActors (`actors/actor.py`), one prompt prefix
always to the same actor. A caller that goes away stops its call there; an actor that is gone for good (it died and Ray
restarted it `max_restarts` times already) is a 503 in OpenAI's shape, and `/health` says so, rather than a bare 500."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from actors.engines.types import Completion, GenerationRequest
from serve_apps.http import HTTPError

log = logging.getLogger("trajforge.generate")
RETRY_AFTER_S = 10


def _local_tokenizer(model: str):
    """The actors' tokenizer when their model directory is on this node too (token texts in logprobs and streams);
    None otherwise, and tokens are then named `token_id:N`."""
    path = Path(model)
    if not (path / "tokenizer_config.json").is_file():
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        log.warning("the actors' tokenizer at %s did not load (%s): tokens are named token_id:N", path, exc)
        return None


class ActorsBackend:
    """Requests go to the named GenerationActors; one prompt prefix always to the same actor (prefix cache)."""

    name = "actors"

    def __init__(self, actor_settings: Any = None) -> None:
        import ray

        from actors.actor import find_actors, start_actors

        self.actors = find_actors()
        if not self.actors and actor_settings is not None:
            log.info("no generation actors running: starting %d from configs/actors.yaml", actor_settings.count)
            _check_room(actor_settings, ray.available_resources())
            start_actors(actor_settings, named=True)
            self.actors = find_actors()
        if not self.actors:
            raise RuntimeError("no generation actors: set generate.start_actors, or start them with "
                               "actors.actor.start_actors(settings, named=True)")
        self.gone: str | None = None  # why an actor is gone for good, once a call found it so
        health = ray.get(self.actors[0].health.remote())
        self.model, self.tokenizer = health["model"], _local_tokenizer(health["model"])

    def _actor_for(self, request: GenerationRequest):
        import zlib

        prefix = request.prompt if request.prompt is not None else str(request.prompt_token_ids)[:2048] \
            if request.prompt_token_ids is not None else "".join(m.content for m in request.messages)
        return self.actors[zlib.crc32(prefix[:512].encode()) % len(self.actors)]

    async def generate_async(self, requests: list[GenerationRequest]) -> list[Completion]:
        """The actor's completions; a caller that goes away (Serve cancels the handler) stops the call on the actor."""
        import uuid

        actor, call_id = self._actor_for(requests[0]), uuid.uuid4().hex
        try:
            return [Completion.model_validate(item) for item in await actor.generate.remote(requests, call_id)]
        except asyncio.CancelledError:
            _cancel(actor, call_id)
            raise
        except Exception as exc:
            raise self._unavailable(exc) from exc

    async def stream_text(self, request: GenerationRequest):
        """The actor's text pieces as it samples them (a Ray streaming generator), then the Completion; a reader
        that stops early cancels the generation on the actor. An actor that dies mid-stream is restarted and the call
        re-run (`max_task_retries`), Ray passing on only the pieces past those already read: so an unseeded request
        gets a seed of its own here, and the re-run samples the same text again rather than splicing another onto it."""
        import secrets
        import uuid

        if request.seed is None:
            request = request.model_copy(update={"seed": secrets.randbits(63)})
        actor, stream_id, finished = self._actor_for(request), uuid.uuid4().hex, False
        try:
            async for ref in actor.generate_stream.options(num_returns="streaming").remote(request.model_dump(), stream_id):
                item = await ref
                if "completion" in item:
                    finished = True
                    yield Completion.model_validate(item["completion"])
                else:
                    yield item["text"]
        except Exception as exc:
            raise self._unavailable(exc) from exc
        finally:
            if not finished:
                _cancel(actor, stream_id)

    def _unavailable(self, exc: Exception) -> Exception:
        """A 503 with Retry-After for an actor Ray cannot reach (restarting, or dead for good: then `/health` says so too);
        any other failure as it is."""
        import ray.exceptions

        if not isinstance(exc, ray.exceptions.RayActorError):
            return exc
        if isinstance(exc, ray.exceptions.ActorDiedError):
            self.gone = "a generation actor died and was not restarted (actors.max_restarts spent): restart the actors"
        reason = self.gone or "a generation actor cannot be reached (it is restarting)"
        log.error("%s: %s", reason, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return HTTPError(503, "actor_unavailable", f"{reason}; try again later", headers={"Retry-After": str(RETRY_AFTER_S)})

    def health(self) -> dict[str, Any]:
        gone = {"ok": False, "error": self.gone} if self.gone else {}
        return {"engine": self.name, "actors": len(self.actors), "model": self.model, **gone}


def _cancel(actor: Any, call_id: str) -> None:
    """Stop a call or stream on its actor, through the control group: the default one may be full of the very calls that
    are to be stopped, and a cancel queued behind them would come only after they had generated their whole answers."""
    from actors.actor import CONTROL_GROUP

    actor.cancel_stream.options(concurrency_group=CONTROL_GROUP).remote(call_id)


def _check_room(settings: Any, free: dict[str, float]) -> None:
    """Fail at once, saying what to change, rather than wait forever for actors the cluster has no room for."""
    need = {"CPU": settings.num_cpus, "GPU": settings.num_gpus, **settings.resources}
    short = [f"{amount * settings.count:g} {name} ({free.get(name, 0):g} free)" for name, amount in need.items()
             if amount * settings.count > free.get(name, 0) + 1e-9]
    if short:
        raise RuntimeError(f"no room for the {settings.count} generation actor(s) of configs/actors.yaml: they need {', '.join(short)}. "
                           "Lower actors.count, actors.num_cpus or actors.num_gpus (e.g. TRAJFORGE__ACTORS__NUM_CPUS=0.5), or add nodes.")
