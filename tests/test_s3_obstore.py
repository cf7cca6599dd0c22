"""Object stores go through obstore and the zarrs codec pipeline (memstore/location/objstore.py): the s3fs-style
options map to obstore's S3Store, credentials of the AWS profile files reach it, an option without a counterpart is
one line, the lease lock is an object every client sees, and other fsspec URLs keep zarr's own path."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from zarr.core.codec_pipeline import BatchedCodecPipeline
from zarr.storage import FsspecStore, ObjectStore

from memloss.memstore.errors import StoreError
from memloss.memstore.location.objstore import aws_credentials, obstore_store, s3_settings
from memloss.memstore.location.options import checked_location, store_location
from memloss.memstore.location.resolve import get_bytes, list_sizes, resolve_store
from memloss.memstore.store import create_store, open_store
from s3_server import S3Server
from test_memstore_zarr import make_spec, write_epoch
from test_s3_store import assert_on_obstore_and_zarrs

URL = "s3://bucket/runs/mem.zarr"


def test_s3fs_options_map_to_the_s3store_config() -> None:
    config, client, retries = s3_settings(URL, {
        "endpoint_url": "http://127.0.0.1:9000", "key": "K", "secret": "S", "token": "T", "anon": True,
        "use_listings_cache": False, "client_kwargs": {"region_name": "eu-west-1", "verify": False},
        "config_kwargs": {"s3": {"addressing_style": "virtual"}, "connect_timeout": 5, "read_timeout": 30,
                          "retries": {"max_attempts": 3}}})
    assert config == {"endpoint": "http://127.0.0.1:9000", "access_key_id": "K", "secret_access_key": "S",
                      "token": "T", "region": "eu-west-1", "skip_signature": True,
                      "virtual_hosted_style_request": True}
    assert client == {"allow_http": True, "allow_invalid_certificates": True,
                      "connect_timeout": timedelta(seconds=5), "timeout": timedelta(seconds=30)}
    assert retries == 2
    config, client, retries = s3_settings(URL, {"endpoint_url": "https://s3.eu-west-1.amazonaws.com"})
    assert config == {"endpoint": "https://s3.eu-west-1.amazonaws.com"} and client == {"allow_http": False}
    assert retries is None
    store = obstore_store(URL, {"endpoint_url": "http://h:9000", "key": "K", "secret": "S"}, region="ap-south-1")
    assert store.prefix == "runs/mem.zarr" and store.config["bucket"] == "bucket"
    assert store.config["region"] == "ap-south-1" and store.client_options["allow_http"] in (True, "true")


@pytest.mark.parametrize(("options", "message"), [
    ({"colour": 1}, "unknown option colour"),
    ({"client_kwargs": {"proxies": {}}}, r"client_kwargs \['proxies'\] not supported"),
    ({"config_kwargs": "fast"}, "config_kwargs must be a JSON object"),
    ({"config_kwargs": {"connect_timeout": "soon"}}, "ValueError"),
])
def test_an_option_obstore_has_no_counterpart_for_is_one_line(options: dict, message: str) -> None:
    with pytest.raises(StoreError, match=f"bad store option for {URL} .*{message}"):
        checked_location(URL, options)  # refused before any request: the bucket does not exist anywhere


def _profile_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "credentials").write_text("[bench]\naws_access_key_id = PK\naws_secret_access_key = PS\n")
    (tmp_path / "config").write_text("[profile bench]\nregion = eu-central-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_credentials_of_an_aws_profile_reach_obstore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _profile_files(tmp_path, monkeypatch)
    assert aws_credentials({"profile": "bench"}) == {"access_key_id": "PK", "secret_access_key": "PS",
                                                     "region": "eu-central-1"}
    monkeypatch.setenv("AWS_PROFILE", "bench")
    store = obstore_store(URL, {})
    assert store.config["access_key_id"] == "PK" and store.config["region"] == "eu-central-1"
    store = obstore_store(URL, {"key": "K", "secret": "S", "client_kwargs": {"region_name": "us-west-2"}},
                          region="ap-south-1")
    assert store.config["access_key_id"] == "K" and store.config["region"] == "us-west-2"  # the options win
    assert aws_credentials({"anon": True}) == {}
    with pytest.raises(StoreError, match="cannot read the AWS credentials .*nosuch"):
        aws_credentials({"profile": "nosuch"})


def test_the_store_on_s3_is_one_obstore_client_for_data_lease_and_manifests(s3: S3Server) -> None:
    location = store_location(s3.url(), s3.options)
    with create_store(location, make_spec(n=40, k=2), block_size=8, owner="runs/a") as store:
        assert_on_obstore_and_zarrs(store)
        write_epoch(store, 0)
        import s3fs  # another client, with the same options, sees the lease beside the store

        fs = s3fs.S3FileSystem(endpoint_url=s3.endpoint, skip_instance_cache=True)
        lease = json.loads(fs.cat(f"{location.url.removeprefix('s3://')}.lock"))
        assert lease["run"] == "runs/a"
        store_root, _ = resolve_store(location, read_only=True)
        assert type(store_root) is ObjectStore
        sizes = list_sizes(store_root, "manifests/")
        assert sizes == {"manifests/zarr.json": fs.size(f"{location.url}/manifests/zarr.json"),
                         "manifests/e0/zarr.json": fs.size(f"{location.url}/manifests/e0/zarr.json")}
    assert not fs.exists(f"{location.url}.lock")  # released on close
    with open_store(location, read_only=True) as reader:
        assert reader.committed_epochs == [0]


def test_an_fsspec_only_url_keeps_zarrs_own_pipeline() -> None:
    url = "memory://obstore-path/mem.zarr"
    with create_store(url, make_spec(n=40, k=2), block_size=8) as store:
        write_epoch(store, 0)
        handle = store._handle
        assert type(handle.store) is FsspecStore
        assert all(isinstance(a.async_array.codec_pipeline, BatchedCodecPipeline) for a in handle.arrays.values())
    store_root, _ = resolve_store(url, read_only=True)
    assert get_bytes(store_root, "zarr.json") is not None
