"""A real S3 protocol server for the tests of published builds: moto's ThreadedMotoServer on a free localhost port.

pyarrow's S3FileSystem talks to it over HTTP; the options travel in the URI's query, as a user's would
(`s3://KEY:SECRET@bucket/prefix?endpoint_override=127.0.0.1:PORT&scheme=http&region=us-east-1`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from helpers import free_port

REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # HOST:PORT

    def filesystem(self):
        from pyarrow import fs as pafs

        return pafs.S3FileSystem(access_key="testing", secret_key="testing", endpoint_override=self.endpoint, scheme="http",
                                 region=REGION, allow_bucket_creation=True)

    def bucket(self, name: str) -> str:
        self.filesystem().create_dir(name)
        return name

    def uri(self, bucket: str, prefix: str) -> str:
        return f"s3://testing:testing@{bucket}/{prefix}?endpoint_override={self.endpoint}&scheme=http&region={REGION}"


@contextlib.contextmanager
def moto_s3() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(f"127.0.0.1:{port}")
    finally:
        server.stop()
