"""A real S3 server in the test process: moto's server mode (Flask/werkzeug in a thread) on 127.0.0.1 and a free
port. `tests/conftest.py` starts one per test session on first use (fixture `s3`); subprocesses reach it through
the endpoint URL and the dummy credentials in `S3Server.env`."""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}
BUCKET = "memloss-test"


@dataclass
class S3Server:
    """A running moto server: its endpoint and the bucket every test writes under (a fresh prefix each)."""

    endpoint: str
    bucket: str = BUCKET

    @property
    def options(self) -> dict[str, str]:
        """The storage options of a store on this server."""
        return {"endpoint_url": self.endpoint}

    @property
    def env(self) -> dict[str, str]:
        """Environment of a subprocess that opens stores here (credentials from the standard AWS variables)."""
        return {**os.environ, **CREDENTIALS}

    def url(self, name: str = "mem.zarr") -> str:
        """A fresh store URL in the test bucket."""
        return f"s3://{self.bucket}/{uuid.uuid4().hex[:12]}/{name}"


def start() -> tuple[S3Server, object]:
    """Starts moto's threaded server (quiet) and creates the test bucket; returns (server, handle to stop)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    handle = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    handle.start()
    host, port = handle.get_host_and_port()
    server = S3Server(f"http://{host}:{port}")
    import s3fs

    s3fs.S3FileSystem(endpoint_url=server.endpoint, skip_instance_cache=True, **_keys()).mkdir(server.bucket)
    return server, handle


def _keys() -> dict[str, str]:
    return {"key": CREDENTIALS["AWS_ACCESS_KEY_ID"], "secret": CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}
