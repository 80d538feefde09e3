"""The Serve config file (`configs/serve.yaml`): Ray Serve's own format, so `serve run configs/serve.yaml` works.

trajforge addresses it through a flat view in which each application's `args` sits under the
application's name: `--set ingest.rate_limits.per_address_per_minute=0` or
`TRAJFORGE__INGEST__RATE_LIMITS__PER_ADDRESS_PER_MINUTE=0` change `applications[name=ingest].args`,
and `--set http_options.port=8001` the top-level key.
"""

from __future__ import annotations

import copy
import os
import ssl
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from trajforge.errors import ConfigError
from trajforge.settings import apply_assignments, env_assignments, origins, read_yaml, validate

M = TypeVar("M", bound=BaseModel)

DEFAULT_SOURCE = "configs/serve.yaml"
_ARGS_SOURCE: ContextVar[tuple[str, Mapping[str, str], Mapping[str, Any]] | None] = ContextVar("serve_args_source", default=None)
"""While `trajforge serve` builds its applications (`args_source`): the file their args came from, what overrode them,
and the flat view as the file has it (each application's args before the overrides)."""


TLS_KEY_PASSWORD_ENV = "TRAJFORGE_TLS_KEY_PASSWORD"


def _load_tls_pair(cert: Path, key: Path) -> None:
    """Refuse a certificate and key that the proxy's TLS could not load (not PEM, a key of another certificate, an
    encrypted key without its password) here, before Ray starts: Serve's proxy failed on them after it had started."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key, password=lambda: os.environ.get(TLS_KEY_PASSWORD_ENV, ""))
    except (ssl.SSLError, ValueError) as exc:
        raise ValueError(f"ssl_certfile {cert} and ssl_keyfile {key} do not load as a PEM certificate and its private key "
                         f"({exc}); an encrypted key's password goes in ${TLS_KEY_PASSWORD_ENV}") from None


class HttpOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    """Address the Serve HTTP proxy binds to (0.0.0.0 to accept other machines)."""
    port: int = Field(default=8000, ge=1, le=65535)
    """Port of the Serve HTTP proxy."""
    request_timeout_s: float | None = None
    """End-to-end timeout of one HTTP request inside Serve; None for no limit."""
    keep_alive_timeout_s: int = 30
    """How long the proxy keeps an idle client connection open."""
    ssl_certfile: str | None = None
    """PEM certificate (chain) of the proxy: with `ssl_keyfile`, the services answer HTTPS only (seed 003: "TLS + token
    auth required"). `trajforge serve --tls-cert`."""
    ssl_keyfile: str | None = None
    """Its PEM private key (`--tls-key`); a password for it comes from $TRAJFORGE_TLS_KEY_PASSWORD, never the file."""

    @model_validator(mode="after")
    def _tls_pair(self) -> "HttpOptions":
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError("ssl_certfile and ssl_keyfile go together (--tls-cert and --tls-key): give both for HTTPS, or neither")
        for name in ("ssl_certfile", "ssl_keyfile"):
            value = getattr(self, name)
            if value and not Path(value).expanduser().is_file():
                raise ValueError(f"{name} {value} is not a file here: give the PEM file's path")
        if self.ssl_certfile:
            _load_tls_pair(Path(self.ssl_certfile).expanduser(), Path(self.ssl_keyfile).expanduser())
        return self

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_certfile else "http"


class Application(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    """Application name; also the first segment of its override paths."""
    route_prefix: str
    """URL prefix the application answers under."""
    import_path: str
    """`module:builder` that Serve calls with `args`."""
    args: dict[str, Any] = {}
    """Arguments of the builder, validated by the application's own settings model."""
    runtime_env: dict[str, Any] = {}
    """Ray runtime environment of the application, as `serve run` and `serve deploy` apply it; `trajforge serve` builds
    the applications in its own process and does not (it warns when one is set)."""


class ServeFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    proxy_location: Literal["HeadOnly", "EveryNode", "Disabled"] = "HeadOnly"
    """Where Serve runs HTTP proxies."""
    http_options: HttpOptions = HttpOptions()
    """The HTTP proxy's options."""
    applications: list[Application]
    """The Serve applications trajforge deploys (ingest, embed, the OpenAI-compatible generate front)."""
    _source: str = PrivateAttr(default=DEFAULT_SOURCE)
    _overrides: dict[str, str] = PrivateAttr(default_factory=dict)
    """Each overridden flat-view path -> what set it (`origins`), so a builder's error blames the variable or flag."""
    _as_read: dict[str, Any] = PrivateAttr(default_factory=dict)
    """The flat view as the file has it, before the overrides: what a builder's check across fields compares with."""

    @contextmanager
    def args_source(self) -> Iterator[None]:
        """Within it, `load_app_args` names this file and the overrides that set an application's bad arg."""
        token = _ARGS_SOURCE.set((self._source, dict(self._overrides), self._as_read))
        try:
            yield
        finally:
            _ARGS_SOURCE.reset(token)

    def app(self, name: str) -> Application:
        for application in self.applications:
            if application.name == name:
                return application
        raise KeyError(f"no application named {name!r} in the Serve config")

    def only(self, names: Iterable[str]) -> ServeFile:
        """The same config with just the named applications; ConfigError names the ones it lacks."""
        wanted = list(names)
        known = [application.name for application in self.applications]
        missing = [name for name in wanted if name not in known]
        if missing:
            raise ConfigError(f"no application {', '.join(map(repr, missing))} in the Serve config; it has {', '.join(known)}")
        return self.model_copy(update={"applications": [application for application in self.applications if application.name in wanted]})


def _flat_view(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """(the view `--set` paths address, the applications list whose `args` are the view's application entries)."""
    view: dict[str, Any] = {key: copy.deepcopy(value) for key, value in data.items() if key != "applications"}
    applications = copy.deepcopy(data.get("applications") or [])
    for application in applications:
        if isinstance(application, dict) and "name" in application:
            view[application["name"]] = application.setdefault("args", {}) or {}
            application["args"] = view[application["name"]]
    return view, applications


def _roots(view: Mapping[str, Any]) -> list[str]:
    return list(dict.fromkeys([*(name for name in ServeFile.model_fields if name != "applications"), *view]))


def override_roots(path: str | Path) -> list[str]:
    """The first segments an override of this Serve config may name: `http_options`, `proxy_location`, the applications."""
    return _roots(_flat_view(read_yaml(path))[0])


def load_serve_file(
    path: str | Path, assignments: Iterable[tuple[str, Any]] = (), environ: dict[str, str] | None = None
) -> ServeFile:
    """Read the file, apply `TRAJFORGE__...` variables then the `--set` assignments, validate."""
    view, applications = _flat_view(read_yaml(path))
    roots, as_read = _roots(view), copy.deepcopy(view)
    env, assignments = env_assignments(environ), list(assignments)
    apply_assignments(view, env, roots)
    apply_assignments(view, assignments, roots)
    names = {application.get("name") for application in applications if isinstance(application, dict)}
    merged = {key: value for key, value in view.items() if key not in names}  # a misspelt top-level key is refused
    merged["applications"] = applications
    overrides = origins(env, assignments)
    serve_file = validate(ServeFile, merged, str(path), overrides=overrides)
    serve_file._source, serve_file._overrides, serve_file._as_read = str(path), overrides, as_read
    return serve_file


def load_app_args(model: type[M], app_name: str, args: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> M:
    """An application's builder args, after its `TRAJFORGE__<APP>__...` environment variables, validated; an error names
    the override that set the value, else the Serve config (the file `trajforge serve` read, within `args_source`)."""
    wrapped, env = {app_name: dict(args)}, env_assignments(environ)
    apply_assignments(wrapped, env, roots=[app_name])
    source, overrides, as_read = _ARGS_SOURCE.get() or (DEFAULT_SOURCE, {}, {app_name: args})
    return validate(model, wrapped[app_name], source, prefix=app_name, overrides={**overrides, **origins(env)},
                    file_data=as_read.get(app_name) or {})
