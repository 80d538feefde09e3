"""Exception types. Each also inherits the matching built-in so callers can catch either."""


class TrajforgeError(Exception):
    """Base of every error trajforge raises on purpose."""


class ConfigError(TrajforgeError, ValueError):
    """A configuration file, environment override or --set value is invalid; the message names the field."""


class ProtocolError(TrajforgeError, ValueError):
    """A request broke the Central Command protocol (schema, signature, sequence)."""


class LakeCorruption(TrajforgeError, IOError):
    """A lake file is damaged in a way that cannot be repaired automatically."""


class ServeStartError(TrajforgeError, RuntimeError):
    """A Serve application did not start; the message carries its replicas' own reason."""


class NoRaySession(TrajforgeError, FileNotFoundError):
    """No Ray session on this node holds what a command needs (its Grafana provisioning, for `trajforge dashboard --install`)."""
