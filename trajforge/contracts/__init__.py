"""Pydantic contracts shared by every component: protocol envelopes and requests."""
