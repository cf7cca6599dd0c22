"""The store on S3 (a moto server in the test process, tests/s3_server.py): the commit record is the last object
an epoch writes, an epoch interrupted between its data and its record is not memory, creation is recoverable, the
lease lock keeps a second writer out, and storage options and bad locations end in one line."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner
from zarr.storage import FsspecStore, ObjectStore
from zarrs import ZarrsCodecPipeline

from memloss.cli.app import app
from memloss.memstore.zarrstore import meta as _zarr_meta
from memloss.memstore.integrity.lock import StoreLockedError
from memloss.memstore.zarrstore.chunks import OBJECT_STORE_THREADS
from memloss.memstore.zarrstore.meta import resolve_store
from memloss.memstore.errors import StoreError
from memloss.memstore.location.options import ENV_VAR, checked_location, parse_store_options, store_location
from memloss.memstore.store import create_store, open_or_create, open_store
from s3_server import S3Server
from test_memstore_integrity import check_interrupted_creation_is_rebuilt
from test_memstore_zarr import make_spec, write_epoch

runner = CliRunner()


def _record_puts(monkeypatch: pytest.MonkeyPatch, url: str) -> list[str]:
    """Every key of the store at `url` the S3 server stored from now on, in the order it stored them (the server's
    side: the chunks go through the zarrs pipeline's own client, the rest through zarr's ObjectStore)."""
    from moto.s3.models import S3Backend

    puts: list[str] = []
    guard = threading.Lock()
    original = S3Backend.put_object
    prefix = url.split("://", 1)[1].split("/", 1)[1] + "/"

    def recorded(self, bucket_name, key_name, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        found = original(self, bucket_name, key_name, *args, **kwargs)
        if key_name.startswith(prefix):  # the lease lives beside the store
            with guard:
                puts.append(key_name[len(prefix):])
        return found

    monkeypatch.setattr(S3Backend, "put_object", recorded)
    return puts


def test_the_commit_record_is_the_last_object_of_each_epoch(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    location = store_location(s3.url(), s3.options)
    with create_store(location, make_spec(n=40, k=2), block_size=8, memory_budget=1 << 30) as store:
        assert_on_obstore_and_zarrs(store)
        puts = _record_puts(monkeypatch, location.url)
        for epoch in range(4):
            start = len(puts)
            write_epoch(store, epoch)
            epoch_puts = puts[start:]
            slot = epoch % 3
            # the epoch's start (its slot stops counting), then its chunks, its manifest, and the record last
            assert epoch_puts[0] == "zarr.json" and epoch_puts[-2:] == [f"manifests/e{epoch}/zarr.json", "zarr.json"]
            chunks = {(key.split("/")[0], key.split("/")[2], key.split("/")[3]) for key in epoch_puts[1:-2]}
            assert chunks == {(a, str(slot), str(b)) for a in ("codes", "scale", "info") for b in range(5)}
            assert len(epoch_puts) == 15 + 3
            record = json.loads(_get(location, "zarr.json"))["attributes"]["memloss"]
            assert record["committed_epochs"][-1] == epoch


def _record_reads(monkeypatch: pytest.MonkeyPatch, url: str) -> list[tuple[str, str]]:
    """(GET or HEAD, key) of every request for an object of the store at `url` the S3 server gets from now on."""
    from urllib.parse import unquote, urlparse

    from moto.s3.responses import S3Response

    reads: list[tuple[str, str]] = []
    guard = threading.Lock()
    prefix = "/" + url.split("://", 1)[1] + "/"
    real = S3Response.key_response

    def recorded(self, request, full_url, headers):  # noqa: ANN001, ANN202
        path = unquote(urlparse(full_url).path)
        if request.method in ("GET", "HEAD") and path.startswith(prefix):
            with guard:
                reads.append((request.method, path[len(prefix):]))
        return real(self, request, full_url, headers)

    monkeypatch.setattr(S3Response, "key_response", recorded)
    return reads


def test_an_epoch_reads_back_only_the_checksums_of_its_chunks(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last block, cut at the array's end (44 rows, blocks of 8), is written whole: zarrs alone reads such a
    chunk first (a HEAD and a GET, two round trips). The commit then reads each chunk's checksum once."""
    location = store_location(s3.url(), s3.options)
    with create_store(location, make_spec(n=44, k=2), block_size=8, memory_budget=1 << 30) as store:
        assert store.resident
        reads = _record_reads(monkeypatch, location.url)
        for epoch in range(4):
            start = len(reads)
            write_epoch(store, epoch)
            chunks = [(method, key) for method, key in reads[start:] if key.split("/")[0] in ("codes", "scale", "info")]
            assert {method for method, _ in chunks} == {"GET"}
            assert sorted(key for _, key in chunks) == sorted({key for _, key in chunks}) and len(chunks) == 6 * 3
    # a reader loads the slots, the last block with one GET per chunk (zarrs alone would first build a partial
    # decoder with a HEAD, holding the GIL: this server runs in the test's process and would hang)
    with open_store(location, read_only=True) as reader:
        start = len(reads)
        reader.begin_epoch(4)
        batch = reader.read(np.arange(44))
        assert batch.valid.all() and bool((batch.codes[0] == 4).all()) and bool((batch.codes[1] == 3).all())
        last = [(method, key) for method, key in reads[start:] if key.split("/")[3:4] == ["5"]]
        assert sorted(last) == [("GET", f"{a}/c/{s}/5{t}") for a, t in (("codes", "/0/0/0"), ("info", "/0"),
                                                                         ("scale", "")) for s in (0, 2)]


def test_damaged_memory_on_s3_is_named_at_the_epoch_start(s3: S3Server) -> None:
    """The read slots' listings and manifests, all fetched at once, still name the damaged epoch and chunk."""
    from memloss.memstore.integrity.manifest import DamagedMemoryError

    location = store_location(s3.url(), s3.options)
    with create_store(location, make_spec(n=44, k=2), block_size=8) as store:
        for epoch in range(3):
            write_epoch(store, epoch)
    import s3fs

    s3fs.S3FileSystem(endpoint_url=s3.endpoint, skip_instance_cache=True).rm(f"{location.url}/codes/c/1/5/0/0/0")
    with open_store(location) as store, pytest.raises(DamagedMemoryError,
                                                      match=r"epoch 1 \(ring slot 1\).*codes/c/1/5/0/0/0 is missing"):
        store.begin_epoch(3)


def assert_on_obstore_and_zarrs(store: object) -> None:
    """The store is zarr's ObjectStore (obstore's S3 client) and its arrays use the zarrs codec pipeline."""
    handle = store._handle  # type: ignore[attr-defined]
    assert type(handle.store) is ObjectStore and type(handle.store.store).__name__ == "S3Store"
    assert int(os.environ["RAYON_NUM_THREADS"]) >= OBJECT_STORE_THREADS  # requests in flight, not cores
    for array in handle.arrays.values():
        assert isinstance(array.async_array.codec_pipeline, ZarrsCodecPipeline)
        assert array.async_array.codec_pipeline.impl is not None  # no fallback to zarr's pipeline


def _listing(s3: S3Server, url: str) -> list[str]:
    import s3fs

    return s3fs.S3FileSystem(endpoint_url=s3.endpoint, skip_instance_cache=True).find(url)


def _get(location: object, key: str) -> bytes:
    from memloss.memstore.location.resolve import get_bytes

    store, _ = resolve_store(location, read_only=True)  # type: ignore[arg-type]
    data = get_bytes(store, key)
    assert data is not None
    return data


def test_an_epoch_interrupted_before_its_record_is_not_memory(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    location = store_location(s3.url(), s3.options)
    store = create_store(location, make_spec(n=40, k=2), block_size=8)
    write_epoch(store, 0)

    def interrupted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError("connection lost before the commit record")

    monkeypatch.setattr(_zarr_meta, "write_manifest", interrupted)  # epoch 1's chunks land, its record never does
    write_epoch(store, 1, commit=False)
    store.commit_epoch(wait=False)
    with pytest.raises(StoreError, match="connection lost"):
        store.close()
    monkeypatch.undo()
    assert len(_listing(s3, f"{location}/codes/c/1/")) == 5  # the data is there
    with open_store(location, read_only=True) as reader:
        assert reader.committed_epochs == [0] and reader.slot_epochs == [0, None, None]
        reader.begin_epoch(1)
        idx = np.arange(40)
        batch = reader.read(idx)
        assert batch.valid[0].all() and bool((batch.codes[0] == 1).all())  # epoch 0's memory, whole
    with open_or_create(location, make_spec(n=40, k=2)) as writer:  # the lease of the failed writer was released
        write_epoch(writer, 1)
        assert writer.committed_epochs == [0, 1]


def test_an_interrupted_creation_on_s3_is_rebuilt(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    location = store_location(s3.url(), s3.options)
    check_interrupted_creation_is_rebuilt(location, monkeypatch, OSError("connection reset"),
                                          lambda: _get(location, "zarr.json"))


def test_a_second_writer_gets_one_line(s3: S3Server) -> None:
    url = s3.url()
    location = store_location(url, s3.options)
    with create_store(location, make_spec(), owner="runs/first") as first:
        write_epoch(first, 0)
        with pytest.raises(StoreLockedError, match=r"is being written by host .*, run runs/first.*lease s3://.*/mem\.zarr\.lock"):
            open_store(location)
        result = runner.invoke(app, ["repair-store", url, "--store-option", f"endpoint_url={s3.endpoint}"])
        assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
        assert result.output.startswith(f"error: store {url} is being written by host ")
    with open_store(location) as second:  # released on close
        assert second.committed_epochs == [0]


def test_store_options_from_the_command_line_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_store_options(["endpoint_url=http://h:9000", "anon=true", 'client_kwargs={"region_name": "x"}',
                                "key=a=b"]) == {"endpoint_url": "http://h:9000", "anon": True,
                                                 "client_kwargs": {"region_name": "x"}, "key": "a=b"}
    for bad in ("endpoint_url", "=x", "a b=1"):
        with pytest.raises(StoreError, match="is not KEY=VALUE"):
            parse_store_options([bad])
    with pytest.raises(StoreError, match="apply to URLs .* not to the local path"):
        store_location("runs/mem.zarr", {"anon": True})
    with pytest.raises(StoreError, match="no store URL"):
        checked_location(None, {"anon": True})
    assert store_location("runs/mem.zarr", {}) == "runs/mem.zarr"
    monkeypatch.setenv(ENV_VAR, "[1]")
    with pytest.raises(StoreError, match="must be a JSON object"):
        checked_location("memory://x")
    monkeypatch.setenv(ENV_VAR, '{"skip_instance_cache": true}')
    store, _ = resolve_store("memory://env-options", read_only=False)
    assert isinstance(store, FsspecStore)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cli_error(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    return result.output


def test_bad_locations_are_one_line_before_anything_is_written(s3: S3Server, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = ["--store-option", f"endpoint_url={s3.endpoint}"]
    assert "the bucket 'no-such-bucket' does not exist" in _cli_error(
        ["inspect-store", "s3://no-such-bucket/x/mem.zarr", *endpoint])
    assert "cannot reach the bucket" in _cli_error(
        ["inspect-store", s3.url(), "--store-option", f"endpoint_url=http://127.0.0.1:{_closed_port()}"])
    assert "unknown storage scheme nosuch://" in _cli_error(["inspect-store", "nosuch://b/mem.zarr"])
    assert "bad store option" in _cli_error(["inspect-store", s3.url(), *endpoint, "--store-option", "colour=1"])
    run = tmp_path / "run"
    assert "the bucket 'no-such-bucket' does not exist" in _cli_error(
        ["train", "--dataset", "digits", "--store", "s3://no-such-bucket/x/mem.zarr", *endpoint, "--out", str(run)])
    assert not run.exists()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    assert "no AWS credentials found" in _cli_error(["inspect-store", s3.url(), *endpoint])
