"""The learner: supervised fine-tuning on the curated `sft` rows with DeepSpeed ZeRO-3, launched with Ray Train.

sources (verify and cache builds) -> chat (template, loss mask) -> packing -> stream (deterministic,
resumable) -> trainer (one worker: model, loss, engine, checkpoints, metrics) <- train (the launch).
"""
