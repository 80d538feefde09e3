"""HTTP request bodies of the session endpoints."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, StringConstraints
from typing import Annotated

from trajforge.contracts.fields import GrooveVersion, Hex64, Identifier

ShortText = Annotated[str, StringConstraints(min_length=1, max_length=100)]


class SessionOpenRequest(BaseModel):
    """`POST /v1/sessions/open`: every field is required (seed 004, endpoint 1)."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    session_id: Identifier
    public_key: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    provider: ShortText
    model: ShortText
    machine_fingerprint: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    app_version_hash: Hex64
    groove_version: Annotated[GrooveVersion, StringConstraints(min_length=1)]  # the Node server's `!field` treats "" as missing


class SessionCloseRequest(BaseModel):
    """`POST /v1/sessions/close`."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    session_id: Identifier
