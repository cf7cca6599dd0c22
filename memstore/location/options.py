"""Storage options of a store URL (endpoint, credentials, ...): where they come from, their validation, and the one
probe of a location that turns an unreachable endpoint, a missing bucket or missing credentials into one line.

Options come from the environment variable MEMLOSS_STORE_OPTIONS (a JSON object, e.g.
`{"endpoint_url": "http://127.0.0.1:9000", "client_kwargs": {"region_name": "eu-west-1"}}`) and, on top of it, from
`--store-option KEY=VALUE` (repeatable; VALUE is read as JSON when it parses, so `anon=true` is a bool and
`client_kwargs={"region_name":"eu-west-1"}` a dict, else it is a string). They are the keyword arguments of the
URL's fsspec filesystem (for s3:// those of `s3fs.S3FileSystem`, which memstore/location/objstore.py maps to
obstore's S3Store: the store itself goes through obstore, the probe through s3fs); credentials normally come from
the standard AWS chain (environment, ~/.aws, instance role). Options are never written into a run's files (they
may hold secrets): a resumed run gets them again from the command line or the environment.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from memloss.memstore.errors import StoreError
from memloss.memstore.location.objstore import (
    AZURE_SCHEMES, GCS_SCHEMES, check_s3_options, obstore_store, probe_object_store,
)

ENV_VAR = "MEMLOSS_STORE_OPTIONS"
S3_PROTOCOLS = ("s3", "s3a")
# A store's listings must be current (the manifests are checked against them, another writer or a repair changes
# them): s3fs's listings cache is off unless the user turns it on.
S3_DEFAULTS: dict[str, Any] = {"use_listings_cache": False}
# The probe gives up on an unreachable endpoint after one retry instead of botocore's default ~10 s of retries.
PROBE_CONFIG = {"retries": {"max_attempts": 2, "mode": "standard"}, "connect_timeout": 5, "read_timeout": 30}
_PROBED: dict[str, str | None] = {}  # locations already probed by this process (validated once) → bucket region


@dataclass(frozen=True)
class StoreLocation:
    """A store URL with the fsspec storage options to open it with (on top of MEMLOSS_STORE_OPTIONS)."""

    url: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.url


def is_url(text: str) -> bool:
    """True for an fsspec URL (s3://, memory://, ...); False for a local path or a file:// URL."""
    return "://" in text and not text.startswith("file://")


def parse_store_options(items: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings → options (VALUE parsed as JSON when it parses, else kept as a string)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise StoreError(f"--store-option {item!r} is not KEY=VALUE; write e.g. --store-option "
                             "endpoint_url=http://127.0.0.1:9000")
        out[key] = _value(raw)
    return out


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def env_store_options() -> dict[str, Any]:
    """The options in MEMLOSS_STORE_OPTIONS (a JSON object); {} when unset or empty."""
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return {}
    try:
        found = json.loads(raw)
    except ValueError as exc:
        raise StoreError(f"{ENV_VAR} is not valid JSON ({exc}); set it to a JSON object such as "
                         '\'{"endpoint_url": "http://127.0.0.1:9000"}\'') from None
    if not isinstance(found, dict):
        raise StoreError(f"{ENV_VAR} must be a JSON object of storage options, got {type(found).__name__}; set it to "
                         'e.g. \'{"endpoint_url": "http://127.0.0.1:9000"}\'')
    return found


def store_location(url: str | Path, options: Mapping[str, Any] | None = None) -> str | StoreLocation:
    """The location to open: `url` itself when there are no explicit options, else a StoreLocation. Options apply
    to URLs only (a local path with options is refused, so that a forgotten s3:// prefix is noticed)."""
    text = str(url)
    if not options:
        return text
    if not is_url(text):
        raise StoreError(f"store options apply to URLs such as s3://bucket/path, not to the local path {text}; drop "
                         "--store-option or give the store as a URL")
    if any(not isinstance(key, str) for key in options):
        raise StoreError(f"store option names must be strings, got {list(options)}")
    return StoreLocation(text, dict(options))


def url_options(url: str, explicit: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options a URL is opened with: defaults of its protocol, MEMLOSS_STORE_OPTIONS, then `explicit`."""
    protocol = url.split("://", 1)[0]
    defaults = S3_DEFAULTS if protocol in S3_PROTOCOLS else {}
    return {**defaults, **env_store_options(), **(explicit or {})}


def filesystem_class(url: str) -> type:
    """The fsspec filesystem class of the URL's scheme; StoreError for an unknown or uninstalled one."""
    import fsspec
    from fsspec.registry import known_implementations

    protocol = url.split("://", 1)[0]
    try:
        return fsspec.get_filesystem_class(protocol)
    except ImportError:
        package = (known_implementations.get(protocol) or {}).get("err", "its fsspec package")
        raise StoreError(f"the store URL {url} needs a package that is not installed ({package})") from None
    except ValueError:
        raise StoreError(f"unknown storage scheme {protocol}:// in {url}; use a local path, s3://bucket/path or "
                         "another fsspec URL (memory://, gcs://, az:// with their packages)") from None


def probe(url: str, options: Mapping[str, Any]) -> str | None:
    """Checks once per process that the location can be reached with these options (S3: the bucket exists and the
    credentials are accepted; memory:// needs nothing). Raises StoreError with one line naming the fix. Returns the
    S3 bucket's region (None elsewhere), which the obstore client is given (memstore/location/objstore.py)."""
    key = f"{url}|{json.dumps(options, sort_keys=True, default=str)}"
    if key in _PROBED:
        return _PROBED[key]
    protocol = url.split("://", 1)[0]
    if protocol in S3_PROTOCOLS and options.get("endpoint_url") is not None:
        check_endpoint(options["endpoint_url"])  # before fsspec and s3fs are imported
    region = None
    if protocol in S3_PROTOCOLS:
        check_s3_options(url, options)  # an option obstore has no counterpart for: one line, before any request
        filesystem_class(url)
        region = _probe_s3(url, options)
    elif protocol in GCS_SCHEMES + AZURE_SCHEMES:
        probe_object_store(url, obstore_store(url, options))
    else:
        filesystem_class(url)
    _PROBED[key] = region
    return region


def _probe_s3(url: str, options: Mapping[str, Any]) -> str | None:
    if options.get("endpoint_url") is not None:
        check_endpoint(options["endpoint_url"])
    import s3fs
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

    bucket = url.split("://", 1)[1].split("/", 1)[0]
    if not bucket:
        raise StoreError(f"the store URL {url} names no bucket; write s3://BUCKET/path/mem.zarr")
    where = options.get("endpoint_url") or "AWS S3"
    config = {**PROBE_CONFIG, **(options.get("config_kwargs") or {})}
    try:
        fs = s3fs.S3FileSystem(**{**options, "config_kwargs": config, "skip_instance_cache": True})
        found = fs.call_s3("head_bucket", Bucket=bucket)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"bad store option for {url} ({_short(exc)}); store options are the arguments of "
                         "s3fs.S3FileSystem (endpoint_url, anon, key, secret, client_kwargs, ...)") from None
    except (NoCredentialsError, PartialCredentialsError):
        raise StoreError(f"no AWS credentials found for {url}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                         "AWS_PROFILE, or pass --store-option anon=true for a public bucket") from None
    except FileNotFoundError:
        raise StoreError(f"the bucket {bucket!r} does not exist at {where}; create it (e.g. `aws s3 mb "
                         f"s3://{bucket}`) or fix the URL / --store-option endpoint_url") from None
    except PermissionError as exc:
        raise StoreError(f"access to the bucket {bucket!r} at {where} was denied ({_short(exc)}); check the "
                         "credentials and their permissions (list, get, put and delete objects)") from None
    except (BotoCoreError, ClientError, OSError) as exc:
        raise StoreError(f"cannot reach the bucket {bucket!r} at {where} ({_short(exc)}); check the network and "
                         "--store-option endpoint_url (or MEMLOSS_STORE_OPTIONS)") from None
    headers = (found.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
    return found.get("BucketRegion") or headers.get("x-amz-bucket-region")


_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                   r"|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")  # a DNS name or an IP address (v4 matches the first form)


def check_endpoint(value: Any) -> None:
    """An S3 endpoint must be an http(s) URL with a host (the README's `endpoint_url=https://...` placeholder is
    not): refused in one line instead of botocore's traceback."""
    try:
        parts = urlsplit(str(value))
        host, _ = parts.hostname or "", parts.port
    except ValueError:
        host, parts = "", urlsplit("")
    if parts.scheme not in ("http", "https") or not _HOST.fullmatch(host):
        raise StoreError(f"--store-option endpoint_url={value} is not an http(s) URL with a host name; write e.g. "
                         "endpoint_url=https://s3.eu-west-1.amazonaws.com or endpoint_url=http://127.0.0.1:9000")


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")[:200]


def checked_location(url: str | Path | None, options: Mapping[str, Any] | None = None) -> str | StoreLocation | None:
    """`store_location(url, options)`, with a URL's location probed now (before a run writes anything): the one
    validation of a store URL and its options. None stays None (no store given) unless options were given."""
    if url is None:
        if options:
            raise StoreError("store options were given but no store URL; add --store s3://bucket/path/mem.zarr")
        return None
    location = store_location(url, options)
    text = str(location)
    if is_url(text):
        explicit = location.options if isinstance(location, StoreLocation) else None
        probe(text, url_options(text, explicit))
    return location
