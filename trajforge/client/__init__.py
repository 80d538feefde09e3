"""The Python SDK an agent uses to send signed trajectories to the ingest service.

    client = IngestClient("http://127.0.0.1:8000", spool_path="~/.cache/trajforge/spool.db")
    session = client.open_session(provider="codex", model="gpt-5.5", contributor_id=contributor_id_for("alice"),
                                  metadata={"agent_role": "frontend"})
    session.record({"type": "thought", "content": "I'll scaffold the project..."})   # numbered and timestamped
    session.record({"type": "action", "tool": "command_execution", "arguments": {"command": "mkdir -p src"}})
    session.send_chunk(steps)                     # or steps already gathered, at once
    session.close({"status": "SUCCESS"})          # the recorded steps still buffered first, then SESSION_CLOSE
    client.flush()

Recorded steps go as one CHUNK every 200 (`chunk_size`, the specification's CHUNK_SIZE) or when the first of them is
5 minutes old (`chunk_timeout_s`, CHUNK_TIMEOUT_MS; checked at each `record` and by a background timer); each is
checked as it is recorded, so a bad step is refused alone (EnvelopeRejected names its field). The spool holds at most
10,000 envelopes (`max_queue_size`, MAX_QUEUE_SIZE): past that a send or record raises QueueFull, which says what to do,
and nothing already spooled or recorded is dropped.

Every envelope is signed (HMAC-SHA256 keyed by the ECDH secret of its session, over the JavaScript
serialization the server reproduces), written to a durable local spool, then delivered in order
with retries and exponential backoff with jitter (5 retries, waits up to 60 s, the service's Retry-After kept).
Steps beyond one envelope's limits (500 steps, 5 MB) go in several envelopes with consecutive sequences; events
beyond one request's (1,000 events, 5 MB) in several requests. A session may be used from several threads.

When the service is unreachable the envelopes stay in the spool and the whole backlog goes out, in order and in
batches the service takes (500 envelopes, 5 MB a request), at the next `flush`, from the background drainer, at a
`send`, or at `close`: once a delivery has found the service down, a `send` only spools (it does not wait through
the retries again) until the service's Retry-After is over or `/health` answers, which it asks at most every
`offline_probe_s` (60 s, as the specification's client probes its offline queue). A refusal (4xx) sets aside only
the envelope refused; 5xx, 429 and no answer keep everything in the spool.

Modules: `ingest` (the client), `session` (numbering and signing), `recorder` (steps one at a time, the chunk
policy), `telemetry` (Starcode's telemetry SDK: events checked, redacted, spooled, flushed), `outbox` (delivery from
the spool and the offline mode), `transport` (HTTP with retries), `batching` (cutting
into pieces the service takes), `errors`, `identity` (contributor id, machine fingerprint, version hash); the spool
itself is `trajforge.spool`.
"""

from trajforge.client.batching import fitting
from trajforge.client.errors import RETRYABLE, IngestError, QueueFull, ServiceUnreachable, retryable
from trajforge.client.identity import GROOVE_VERSION, app_version_hash, contributor_id_for, machine_fingerprint
from trajforge.client.ingest import IngestClient
from trajforge.client.outbox import FlushReport
from trajforge.client.session import Session
from trajforge.client.telemetry import EventRejected, TelemetryClient, TelemetryFlush

__all__ = [
    "GROOVE_VERSION", "RETRYABLE", "EventRejected", "FlushReport", "IngestClient", "IngestError", "QueueFull", "ServiceUnreachable", "Session",
    "TelemetryClient", "TelemetryFlush",
    "app_version_hash", "contributor_id_for", "fitting", "machine_fingerprint", "retryable",
]
