"""The actors' object-store client: obstore (zarr's ObjectStore) where it fits, fsspec otherwise.

Against the loopback moto S3 server: a worker's ``write_chunks`` opens an ``s3://`` store through obstore
(3x less CPU per chunk than s3fs: bench/bench_s3_client.py), and the driver, which reads through s3fs,
finds exactly the bytes the receipts' digests name; with ``DISTNTK_OBJECT_CLIENT=fsspec`` or a storage
option obstore has no name for, the worker takes s3fs as before.  The translation of the s3fs option
names is checked key by key.
"""

import pytest
from raytools import tiny_spec

from distntk.spec import load_spec
from distntk.store import create_store, open_result_store, protocol, url_path, write_chunks
from distntk.store import writer as writer_mod
from distntk.store.objstore import CLIENT_ENV, obstore_zarr_store, s3_config

pytest.importorskip("obstore", reason="the s3 extra installs obstore")


def test_s3fs_option_names_translate_and_unknown_ones_are_named():
    cfg, client, retry, provider = s3_config(
        {"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "s", "anon": False,
         "client_kwargs": {"region_name": "eu-west-1"}, "config_kwargs": {"max_pool_connections": 64,
                                                                          "connect_timeout": 5},
         "s3_additional_kwargs": {"ServerSideEncryption": "AES256"}, "skip_instance_cache": True}, environ={})
    assert cfg == {"endpoint": "http://127.0.0.1:9", "access_key_id": "k", "secret_access_key": "s",
                   "skip_signature": False, "region": "eu-west-1", "server_side_encryption": "AES256"}
    assert client["allow_http"] is True and client["connect_timeout"].total_seconds() == 5  # an http:// endpoint
    assert retry["max_retries"] == 10 and provider is None
    with pytest.raises(ValueError, match="storage option.*s3_additional_kwargs.ACL.*session"):
        s3_config({"session": object(), "s3_additional_kwargs": {"ACL": "private"}}, environ={})
    # the environment's endpoint, as botocore reads it
    assert s3_config({}, environ={"AWS_ENDPOINT_URL": "http://127.0.0.1:9"})[1] == {"allow_http": True}


def test_only_object_storage_goes_through_obstore(monkeypatch, tmp_path):
    def store(url, options=None):
        return obstore_zarr_store(protocol(url), url_path(url), options)

    assert store(str(tmp_path / "x.zarr")) is None
    assert store("memory://x.zarr") is None
    assert store("s3://b/x.zarr", {"session": object()}) is None  # no obstore name: fsspec
    assert store("s3://b/x.zarr", {"endpoint_url": "http://127.0.0.1:9"}) is not None


@pytest.mark.parametrize("client", ["obstore", "fsspec"])
def test_worker_chunks_through_either_client_match_their_digests(client, s3_bucket, tmp_path, monkeypatch):
    from zarr.storage import FsspecStore, ObjectStore

    if client == "fsspec":
        monkeypatch.setenv(CLIENT_ENV, "fsspec")
    spec = load_spec(tiny_spec(tmp_path / "c.toml", widths=(16,), n_init=2, n_data=4, block=2))
    e = spec.experiment
    url = s3_bucket.url(f"{client}.zarr")
    rs = create_store(url, spec, e.predictions())
    target = rs.chunk_target()
    units = e.units()
    receipts = write_chunks(target, [(u, e.compute(u)) for u in units])  # as an actor writes them
    assert all(isinstance(r, dict) for r in receipts), receipts
    arrays = writer_mod._WORKER_ARRAYS[(target.path, target.store_id)]
    assert isinstance(arrays["output"].store, ObjectStore if client == "obstore" else FsspecStore)
    with rs.writer() as w:  # the driver commits the receipts
        for u, r in zip(units, receipts, strict=True):
            w.commit(u, 0.1, "node", r)
    # read back through s3fs, every chunk checked against its digest
    assert open_result_store(url, mode="r").pending(units, check=True) == []
