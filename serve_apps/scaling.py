"""How many replicas a Serve application runs: a fixed `num_replicas`, or Ray Serve's `autoscaling_config`, checked
when the settings load (Ray itself ignores keys it does not know, so a misspelt one would silently do nothing)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator


def _checked(config: dict[str, Any] | None) -> dict[str, Any] | None:
    if config is None:
        return None
    from ray.serve.config import AutoscalingConfig

    known = set(AutoscalingConfig.model_fields)
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown autoscaling_config keys {unknown}; Ray Serve knows {sorted(known)}")
    AutoscalingConfig(**config)  # Ray's own bounds (max_replicas >= min_replicas, ...)
    return config


AutoscalingSetting = Annotated[dict[str, Any] | None, AfterValidator(_checked)]
"""A settings field: Ray Serve autoscaling (min_replicas, max_replicas, target_ongoing_requests, ...) or null."""


def replica_options(num_replicas: int, autoscaling_config: dict[str, Any] | None) -> dict[str, Any]:
    """`serve.deployment` options for the replica count: autoscaling when configured (it replaces num_replicas)."""
    return {"autoscaling_config": autoscaling_config} if autoscaling_config else {"num_replicas": num_replicas}
