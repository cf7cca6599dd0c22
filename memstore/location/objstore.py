"""Object stores (s3://, gs://, az://) through obstore: the zarr `ObjectStore` of a URL, built from the same storage
options as before (those of s3fs for S3; see memstore/location/options.py), so that the Rust `zarrs` codec pipeline
reads and writes the chunks itself (it accepts zarr's ObjectStore, not fsspec stores) and the lock, the manifests
and every other object go through the very same client and configuration.

S3 options map to obstore's S3Store as follows (anything else is refused in one line):
endpoint_url → endpoint (an http:// endpoint also sets allow_http, e.g. a local moto or MinIO server);
key / secret / token → access_key_id / secret_access_key / token; anon=true → skip_signature;
client_kwargs: region_name → region, endpoint_url, aws_access_key_id, aws_secret_access_key, aws_session_token,
verify=false → allow_invalid_certificates; config_kwargs: s3.addressing_style="virtual" → virtual-hosted-style
requests (path style otherwise), connect_timeout / read_timeout (s) → client timeouts, retries.max_attempts →
max_retries; requester_pays → request_payer; profile → the AWS profile whose credentials are used.
Credentials come from the standard AWS chain as botocore resolves it (environment, profile files, SSO, instance or
container role): keys found in the environment or the profile files are passed to obstore as they are; an instance
or container role and web identity are left to obstore, which refreshes those itself (keys of a profile are read
once, when the store opens: a role assumed through a profile lasts its session time). Options of s3fs that only
tune its own caches, and config_kwargs.signature_version (obstore signs with SigV4), are accepted and ignored. gs:// and az:// take obstore's own configuration keys
(`GCSStore` / `AzureStore`, e.g. service_account_path, account_name) and read GOOGLE_* / AZURE_* variables.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from memloss.memstore.errors import StoreError

S3_SCHEMES = ("s3", "s3a")
GCS_SCHEMES = ("gs", "gcs")
AZURE_SCHEMES = ("az", "abfs", "abfss")
OBJECT_SCHEMES = S3_SCHEMES + GCS_SCHEMES + AZURE_SCHEMES
# s3fs options that tune s3fs's own caches and buffers: nothing to map, accepted so that existing settings still work
S3_IGNORED = frozenset({"use_listings_cache", "skip_instance_cache", "listings_expiry_time", "max_paths",
                        "default_block_size", "default_fill_cache", "default_cache_type", "cache_regions",
                        "use_ssl", "version_aware", "asynchronous", "fixed_upload_size"})
S3_TOP = frozenset({"endpoint_url", "key", "secret", "token", "anon", "client_kwargs", "config_kwargs",
                    "requester_pays", "profile"}) | S3_IGNORED
S3_CLIENT_KWARGS = frozenset({"region_name", "endpoint_url", "aws_access_key_id", "aws_secret_access_key",
                              "aws_session_token", "verify"})
S3_CONFIG_KWARGS = frozenset({"s3", "connect_timeout", "read_timeout", "retries", "signature_version"})
# credential sources obstore finds and refreshes itself (botocore's names for them)
NATIVE_CREDENTIALS = frozenset({"iam-role", "container-role", "assume-role-with-web-identity"})


def is_object_url(url: str) -> bool:
    """True for a URL that goes through obstore (s3://, s3a://, gs://, gcs://, az://, abfs://, abfss://)."""
    return url.split("://", 1)[0] in OBJECT_SCHEMES


def split_url(url: str) -> tuple[str, str, str]:
    """(scheme, bucket, prefix without slashes at either end) of an object store URL."""
    scheme, _, rest = url.partition("://")
    bucket, _, prefix = rest.partition("/")
    return scheme, bucket, prefix.strip("/")


def _bad(url: str, what: str) -> StoreError:
    return StoreError(f"bad store option for {url} ({what}); store options are those of s3fs.S3FileSystem "
                      "(endpoint_url, anon, key, secret, token, client_kwargs, config_kwargs, profile)")


def _dict(options: Mapping[str, Any], name: str, allowed: frozenset[str], url: str) -> dict[str, Any]:
    value = options.get(name) or {}
    if not isinstance(value, dict):
        raise _bad(url, f"{name} must be a JSON object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise _bad(url, f"{name} {unknown} not supported; supported: {sorted(allowed)}")
    return value


def s3_settings(url: str, options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], int | None]:
    """(S3Store config, client_options, max_retries or None) for s3fs-style `options` (see module doc), before the
    credentials are added; StoreError in one line for an option obstore has no counterpart for."""
    unknown = sorted(set(options) - S3_TOP)
    if unknown:
        raise _bad(url, f"unknown option {', '.join(unknown)}")
    client = _dict(options, "client_kwargs", S3_CLIENT_KWARGS, url)
    conf = _dict(options, "config_kwargs", S3_CONFIG_KWARGS, url)
    config: dict[str, Any] = {}
    client_options: dict[str, Any] = {}
    endpoint = options.get("endpoint_url") or client.get("endpoint_url")
    if endpoint:
        config["endpoint"] = str(endpoint)
        client_options["allow_http"] = str(endpoint).startswith("http://")
    pairs = {"access_key_id": options.get("key") or client.get("aws_access_key_id"),
             "secret_access_key": options.get("secret") or client.get("aws_secret_access_key"),
             "token": options.get("token") or client.get("aws_session_token"), "region": client.get("region_name")}
    config.update({name: str(value) for name, value in pairs.items() if value})
    if options.get("anon"):
        config["skip_signature"] = True
    if options.get("requester_pays"):
        config["request_payer"] = True
    if client.get("verify") is False:
        client_options["allow_invalid_certificates"] = True
    if (conf.get("s3") or {}).get("addressing_style") == "virtual":
        config["virtual_hosted_style_request"] = True
    for source, target in (("connect_timeout", "connect_timeout"), ("read_timeout", "timeout")):
        if conf.get(source) is not None:
            client_options[target] = timedelta(seconds=float(conf[source]))
    attempts = (conf.get("retries") or {}).get("max_attempts")
    return config, client_options, None if attempts is None else max(0, int(attempts) - 1)


def check_s3_options(url: str, options: Mapping[str, Any]) -> None:
    """StoreError in one line when `options` cannot be mapped to obstore's S3Store (no request, no credentials)."""
    try:
        s3_settings(url, options)
    except (TypeError, ValueError, AttributeError) as exc:
        raise _bad(url, f"{type(exc).__name__}: {exc}") from None


def aws_credentials(options: Mapping[str, Any]) -> dict[str, str]:
    """The keys of the standard AWS chain (botocore: environment, profile files, SSO, ...) for obstore's config;
    {} when the options carry keys, ask for anonymous access, or the source is one obstore refreshes itself."""
    if options.get("anon") or options.get("key") or (options.get("client_kwargs") or {}).get("aws_access_key_id"):
        return {}
    import botocore.session
    from botocore.exceptions import BotoCoreError

    try:
        session = botocore.session.Session(profile=options.get("profile"))
        found = session.get_credentials()
        if found is None or found.method in NATIVE_CREDENTIALS:
            return {}
        frozen = found.get_frozen_credentials()
    except BotoCoreError as exc:
        raise StoreError(f"cannot read the AWS credentials ({exc}); check AWS_PROFILE / --store-option profile and "
                         "~/.aws/credentials") from None
    out = {"access_key_id": frozen.access_key, "secret_access_key": frozen.secret_key}
    if frozen.token:
        out["token"] = frozen.token
    if not (options.get("client_kwargs") or {}).get("region_name") and session.get_config_variable("region"):
        out["region"] = session.get_config_variable("region")
    return out


def obstore_store(url: str, options: Mapping[str, Any], region: str | None = None) -> Any:
    """The obstore store (S3Store, GCSStore or AzureStore) rooted at the URL's prefix. `region`: the bucket's
    region found by the probe, used unless the options name one (it wins over the AWS configuration's region)."""
    from obstore.exceptions import BaseError
    from obstore.store import AzureStore, GCSStore, S3Store

    scheme, bucket, prefix = split_url(url)
    try:
        if scheme in S3_SCHEMES:
            config, client_options, retries = s3_settings(url, options)
            config = {**aws_credentials(options), **({"region": region} if region else {}), **config}
            retry = None if retries is None else {"max_retries": retries, "retry_timeout": timedelta(seconds=60),
                                                  "backoff": {"init_backoff": timedelta(milliseconds=100),
                                                              "max_backoff": timedelta(seconds=15), "base": 2.0}}
            return S3Store(bucket, prefix=prefix or None, config=config, client_options=client_options or None,
                           retry_config=retry)
        kind = GCSStore if scheme in GCS_SCHEMES else AzureStore
        return kind(bucket, prefix=prefix or None, config=dict(options) or None)
    except (BaseError, TypeError, ValueError) as exc:
        raise StoreError(f"bad store option for {url} ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
                         "check --store-option / MEMLOSS_STORE_OPTIONS") from None


def with_prefix(store: Any, prefix: str) -> Any:
    """The same obstore store (same kind, configuration, client options and retries) rooted at `prefix`."""
    return type(store)(prefix=prefix or None, config=store.config, client_options=store.client_options,
                       retry_config=store.retry_config, credential_provider=store.credential_provider)


def probe_object_store(url: str, store: Any) -> None:
    """One listing of the location (gs://, az://): a missing bucket, refused credentials or an unreachable service
    become one line."""
    import obstore
    from obstore.exceptions import BaseError, NotFoundError, PermissionDeniedError, UnauthenticatedError

    try:
        obstore.list_with_delimiter(store)
    except NotFoundError:
        raise StoreError(f"the bucket or container of {url} does not exist; create it or fix the URL") from None
    except (PermissionDeniedError, UnauthenticatedError) as exc:
        raise StoreError(f"access to {url} was refused ({str(exc).splitlines()[0][:160]}); check the credentials "
                         "and their permissions (list, get, put and delete objects)") from None
    except BaseError as exc:
        raise StoreError(f"cannot reach {url} ({str(exc).splitlines()[0][:160]}); check the network, the "
                         "credentials and --store-option / MEMLOSS_STORE_OPTIONS") from None
