"""Zarr v3 stores on s3:// through fsspec/s3fs, against the loopback moto server.

Groundwork for remote result stores: the dataset below has the layout of a distntk
store (docs/reference/store.md) in miniature, and the writes are the ones a
run makes -- a NaN template first, then one unit's region, then its ``done`` flags.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
import zarr

# open/write without consolidated metadata: it is not part of the Zarr v3 spec.
ZARR = {"zarr_format": 3, "consolidated": False}


def _store_like(widths=(16, 64), n_init=2, n_data=4, times=(0.5, 1.0), probes=("0000", "0101", "1111")):
    shape = (len(widths), n_init, n_data, len(times), len(probes))
    return xr.Dataset(
        {
            "output": (("width", "init", "data", "time", "probe"), np.full(shape, np.nan)),
            "done": (("width", "init", "data"), np.zeros(shape[:3], dtype=bool)),
            # Variable-length strings: fixed-width numpy "<U" has no Zarr v3 spec yet.
            "unit_node": (("width", "init"), np.full(shape[:2], "", dtype=object)),
            "h": (("time", "probe"), np.linspace(0.0, 1.0, len(times) * len(probes)).reshape(len(times), -1)),
        },
        coords={
            "width": np.array(widths, dtype=np.int64),
            "init": np.arange(n_init, dtype=np.int64),
            "data": np.arange(n_data, dtype=np.int64),
            "time": np.array(times, dtype=np.float64),
            "probe": np.array(probes, dtype=object),
        },
        attrs={"spec_hash": "0" * 64, "beta": 0.75, "title": "distntk store (test)"},
    )


def _write_new(ds, url, **kw):
    """Create the store with one (width, init) unit per chunk, as a run lays it out."""
    encoding = {name: {"chunks": (1, 1) + ds[name].shape[2:]}
                for name in ("output", "done", "unit_node")}
    ds.to_zarr(url, mode="w-", encoding=encoding, **ZARR, **kw)


def test_server_listens_on_loopback(s3_server):
    assert s3_server.endpoint_url.startswith("http://127.0.0.1:")
    assert int(s3_server.endpoint_url.rsplit(":", 1)[1]) > 0


def test_zarr_v3_round_trip_with_storage_options(s3_bucket):
    ds = _store_like()
    url = s3_bucket.url("stores/round-trip.zarr")
    _write_new(ds, url, storage_options=s3_bucket.storage_options())

    back = xr.open_zarr(url, storage_options=s3_bucket.storage_options(), **ZARR)
    xr.testing.assert_identical(back.load(), ds.load())

    # It really is a Zarr v3 group in the bucket, not a local file.
    fs = s3_bucket.filesystem()
    root = json.loads(fs.cat(f"{s3_bucket.name}/stores/round-trip.zarr/zarr.json"))
    assert (root["zarr_format"], root["node_type"]) == (3, "group")
    assert zarr.open_group(url, mode="r", storage_options=s3_bucket.storage_options()).metadata.zarr_format == 3


def test_unit_region_write_then_done_flags(s3_bucket):
    """One unit's output written into its region of a NaN template; ``done`` after the data."""
    url = s3_bucket.url("stores/regions.zarr")
    opts = s3_bucket.storage_options()
    _write_new(_store_like(), url, storage_options=opts)

    template = xr.open_zarr(url, storage_options=opts, **ZARR)
    region = {"width": slice(1, 2), "init": slice(0, 1), "data": slice(0, 4)}
    unit = template[["output"]].isel(region).load()
    unit["output"][:] = np.arange(unit["output"].size, dtype=float).reshape(unit["output"].shape)
    unit.drop_vars(list(unit.coords)).to_zarr(url, region=region, mode="r+", storage_options=opts, **ZARR)
    flags = template[["done"]].isel(region).load()
    flags["done"][:] = True
    flags.drop_vars(list(flags.coords)).to_zarr(url, region=region, mode="r+", storage_options=opts, **ZARR)

    back = xr.open_zarr(url, storage_options=opts, **ZARR).load()
    np.testing.assert_array_equal(back["output"].isel(region).values, unit["output"].values)
    assert back["done"].sum().item() == 4 and back["done"].isel(region).all()
    assert np.isnan(back["output"].isel(width=0)).all() and np.isnan(back["output"].isel(width=1, init=1)).all()


def test_environment_alone_reaches_the_server(s3_bucket):
    """What ``distntk ... --store s3://...`` relies on: no storage options, only the environment.

    Also from a child process, as the CLI and the Ray workers it starts are.
    """
    url = s3_bucket.url("stores/env-only.zarr")
    _write_new(_store_like(), url)
    assert xr.open_zarr(url, **ZARR).sizes["width"] == 2

    code = f"import xarray as xr; print(xr.open_zarr({url!r}, consolidated=False).sizes['probe'])"
    out = subprocess.run([sys.executable, "-c", code], env=s3_bucket.server.subprocess_env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "3"


def test_missing_store_is_an_error_not_an_empty_dataset(s3_bucket):
    with pytest.raises(FileNotFoundError):
        xr.open_zarr(s3_bucket.url("stores/absent.zarr"), **ZARR)
