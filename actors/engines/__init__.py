"""Generation engines behind one interface (`generate(requests) -> completions`): transformers, openai, vllm."""

from actors.engines.types import Completion, Engine, GenerationRequest, Message

__all__ = ["Completion", "Engine", "GenerationRequest", "Message"]
