"""Redaction of secrets and PII in trajectory text (placeholder docstring; filled after measuring)."""

from trajforge.redaction.redactor import Found, Redaction, Redactor
from trajforge.redaction.settings import KINDS, RedactionSettings

__all__ = ["KINDS", "Found", "Redaction", "Redactor", "RedactionSettings"]
