"""zarr stores over obstore for object storage (``s3://``, ``gs://``): the actors' client for their chunk writes.

Measured (``bench/bench_s3_client.py``, moto's S3 server on loopback, 256 units): an actor's
:func:`~distntk.store.write_chunks` costs 1.1-1.3 ms of CPU per unit through obstore (zarr's
``ObjectStore``) against 4.1 ms through s3fs, the same PUTs, half the wall time, and an actor process
starts the client in 11 ms instead of 290 ms.  The driver's own I/O (commits, the resume's open, about
0.02-0.03 ms per unit with either client) and everything that uses fsspec directly (the lease's
conditional writes, the creation probe, catalogs' listings) stay on s3fs/gcsfs.

:func:`obstore_zarr_store` returns ``None`` (the caller then opens the location through fsspec, as
before) when the location is not ``s3://``/``s3a://``/``gs://``/``gcs://``, when obstore is not
installed, or when a storage option has no obstore equivalent (:func:`s3_config`, :func:`gcs_config`):
every ``--storage-option`` that works today keeps working.  ``DISTNTK_OBJECT_CLIENT=fsspec`` in the
driver's environment keeps the actors on fsspec (:data:`CLIENT_ENV`).  The s3fs names are translated
(``endpoint_url``, ``key``, ``secret``, ``token``, ``anon``, ``client_kwargs.region_name``, ...), and
what the ``AWS_*`` environment means to botocore but not to
obstore (an ``http://`` endpoint, ``AWS_PROFILE``, ``AWS_CA_BUNDLE``) is carried over.  Retries back off
from 0.25 s to 8 s for up to 60 s (obstore's default gives up within about 1.5 s of refused
connections).  obstore's errors are translated by :func:`~distntk.store.storage_errors` like s3fs's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from pathlib import Path

__all__ = ["CLIENT_ENV", "gcs_config", "obstore_zarr_store", "s3_config"]

CLIENT_ENV = "DISTNTK_OBJECT_CLIENT"  # "fsspec" in the driver's environment: the actors use s3fs/gcsfs too
# (read once, by the driver, into ChunkTarget.client: it reaches the actors of any cluster)

_S3_TOP = {"endpoint_url": "endpoint", "key": "access_key_id", "secret": "secret_access_key",
           "token": "session_token", "anon": "skip_signature", "requester_pays": "request_payer",
           "skip_instance_cache": None, "use_listings_cache": None, "listings_expiry_time": None,
           "max_concurrency": None, "default_block_size": None, "default_fill_cache": None,
           "default_cache_type": None, "cache_regions": None, "fixed_upload_size": None, "asynchronous": None,
           "loop": None}
_S3_CLIENT_KWARGS = {"region_name": "region", "endpoint_url": "endpoint", "aws_access_key_id": "access_key_id",
                     "aws_secret_access_key": "secret_access_key", "aws_session_token": "session_token"}
_S3_ADDITIONAL = {"ServerSideEncryption": "server_side_encryption", "SSEKMSKeyId": "sse_kms_key_id",
                  "BucketKeyEnabled": "sse_bucket_key_enabled", "RequestPayer": "request_payer"}
_STORES: dict = {}  # (kind, bucket, prefix, options) -> obstore store: one client (and pool) per store, as fsspec
# obstore's own default (10 retries from 100 ms with full jitter) gives up within about 1.5 s of refused
# connections (measured: --errors); this backoff outlasts the 3 s outage that botocore and distntk's retries ride out.
RETRY = {"max_retries": 10, "retry_timeout": dt.timedelta(seconds=60),
         "backoff": {"init_backoff": dt.timedelta(seconds=0.25), "max_backoff": dt.timedelta(seconds=8), "base": 2}}


def _seconds(value) -> dt.timedelta:
    return dt.timedelta(seconds=float(value))


def s3_config(storage_options: dict | None, environ=os.environ) -> tuple[dict, dict, dict, object]:
    """``(S3Config, ClientConfig, RetryConfig, credential provider or None)`` for s3fs's ``storage_options``
    (plus what the ``AWS_*`` environment means to botocore but not to obstore).  An option with no obstore
    equivalent raises ``ValueError`` naming it (``storage_errors`` makes that a one-line StoreError)."""
    opts = dict(storage_options or {})
    cfg: dict = {}
    client: dict = {}
    retry = dict(RETRY)
    unsupported = []
    for k, v in opts.items():
        if k in _S3_TOP:
            if _S3_TOP[k] is not None:
                cfg[_S3_TOP[k]] = bool(v) if k in ("anon", "requester_pays") else v
        elif k == "client_kwargs":
            for ck, cv in (v or {}).items():
                if ck in _S3_CLIENT_KWARGS:
                    cfg[_S3_CLIENT_KWARGS[ck]] = cv
                elif ck == "verify":
                    if cv is False:
                        client["allow_invalid_certificates"] = True
                    elif isinstance(cv, str):  # a CA bundle file; obstore takes the PEM text
                        client["root_certificate"] = Path(cv).read_text()
                elif ck == "use_ssl":
                    if cv is False:
                        client["allow_http"] = True
                else:
                    unsupported.append(f"client_kwargs.{ck}")
        elif k == "config_kwargs":
            for ck, cv in (v or {}).items():
                if ck == "max_pool_connections":
                    continue  # botocore's pool cap (distntk sets 128); obstore's reqwest pool has no cap
                elif ck == "connect_timeout":
                    client["connect_timeout"] = _seconds(cv)
                elif ck == "read_timeout":
                    client["read_timeout"] = _seconds(cv)
                elif ck == "region_name":
                    cfg["region"] = cv
                elif ck == "retries":
                    n = (cv or {}).get("total_max_attempts", (cv or {}).get("max_attempts"))
                    if n is not None:
                        retry["max_retries"] = max(0, int(n) - 1)
                elif ck == "s3":
                    if (cv or {}).get("addressing_style") == "virtual":
                        cfg["virtual_hosted_style_request"] = True
                elif ck == "signature_version":
                    if str(cv).lower() == "unsigned":
                        cfg["skip_signature"] = True
                elif ck == "proxies":
                    client["proxy_url"] = next(iter((cv or {}).values()), None)
                else:
                    unsupported.append(f"config_kwargs.{ck}")
        elif k == "s3_additional_kwargs":
            for ck, cv in (v or {}).items():
                if ck in _S3_ADDITIONAL:
                    cfg[_S3_ADDITIONAL[ck]] = cv
                else:
                    unsupported.append(f"s3_additional_kwargs.{ck}")
        elif k == "use_ssl":
            if v is False:
                client["allow_http"] = True
        elif k != "profile":
            unsupported.append(k)
    if unsupported:
        raise ValueError(f"storage option(s) {', '.join(sorted(unsupported))} have no obstore equivalent")
    # botocore takes an http:// endpoint as it is; obstore refuses it ("builder error") without allow_http
    endpoint = cfg.get("endpoint") or environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or \
        environ.get("AWS_ENDPOINT") or ""
    if endpoint.startswith("http://"):
        client["allow_http"] = True
    if "root_certificate" not in client and environ.get("AWS_CA_BUNDLE"):  # botocore reads it, obstore does not
        with contextlib.suppress(OSError):
            client["root_certificate"] = Path(environ["AWS_CA_BUNDLE"]).read_text()
    # obstore reads AWS_ACCESS_KEY_ID & co., web identity, ECS and IMDS, but no profile and no ~/.aws files
    provider = None
    profile = opts.get("profile") or environ.get("AWS_PROFILE") or environ.get("AWS_DEFAULT_PROFILE")
    if profile and "access_key_id" not in cfg and "skip_signature" not in cfg:
        provider = _botocore_credentials(profile)
    if "region" not in cfg and not (environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")):
        with contextlib.suppress(Exception):  # botocore's region from ~/.aws/config, which obstore does not read
            import botocore.session

            region = botocore.session.Session(profile=profile or None).get_config_variable("region")
            if region:
                cfg["region"] = region
    return cfg, client, retry, provider


def _botocore_credentials(profile: str):
    """A credential provider that asks botocore for a named profile's credentials (refreshed by botocore)."""
    import botocore.session

    creds = botocore.session.Session(profile=profile).get_credentials()
    if creds is None:
        raise ValueError(f"no credentials for AWS profile {profile!r}")

    def provider() -> dict:  # asked again every 5 minutes: botocore refreshes an assumed role's or SSO session
        frozen = creds.get_frozen_credentials()
        return {"access_key_id": frozen.access_key, "secret_access_key": frozen.secret_key,
                "token": frozen.token, "expires_at": dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)}

    return provider


def gcs_config(storage_options: dict | None) -> tuple[dict, dict]:
    """``(GCSConfig, ClientConfig)`` for gcsfs's ``storage_options`` (not exercised here: no GCS server)."""
    opts = dict(storage_options or {})
    cfg: dict = {}
    unsupported = []
    for k, v in opts.items():
        if k == "token":
            if v == "anon":
                cfg["skip_signature"] = True
            elif isinstance(v, dict):
                cfg["service_account_key"] = json.dumps(v)
            elif isinstance(v, str) and v not in ("google_default", "cloud", "cache", "browser"):
                kind = json.loads(Path(v).read_text()).get("type")
                cfg["service_account" if kind == "service_account" else "application_credentials"] = v
            elif v is not None and not isinstance(v, str):
                unsupported.append("token (a credentials object: obstore.auth.google.GoogleCredentialProvider)")
        elif k == "endpoint_url":
            cfg["base_url"] = v
        elif k in ("project", "access", "consistency", "cache_timeout", "skip_instance_cache", "block_size",
                   "check_connection", "asynchronous", "loop"):
            continue
        else:
            unsupported.append(k)  # requester_pays, session_kwargs, ...
    if unsupported:
        raise ValueError(f"storage option(s) {', '.join(sorted(unsupported))} have no obstore equivalent")
    client = {"allow_http": True} if str(cfg.get("base_url", "")).startswith("http://") else {}
    return cfg, client


def obstore_zarr_store(scheme: str, rest: str, storage_options: dict | None = None, read_only: bool = False):
    """zarr's ``ObjectStore`` for the location ``scheme://rest`` when the scheme is ``s3``, ``s3a``, ``gs`` or
    ``gcs``, or ``None`` (see the module docstring; the location layer splits the location,
    :func:`distntk.store.locations.zarr_group`).  Stores are cached per location and options, as fsspec
    caches its filesystems, so a process keeps one connection pool per store."""
    scheme = scheme.lower()
    if scheme not in ("s3", "s3a", "gs", "gcs"):
        return None
    try:
        from obstore.store import GCSStore, S3Store
        from zarr.storage import ObjectStore
    except ImportError:
        return None
    bucket, _, prefix = rest.partition("/")
    key = (scheme, bucket, prefix.strip("/"), read_only,
           json.dumps(storage_options or {}, sort_keys=True, default=str))
    store = _STORES.get(key)
    if store is None:
        try:
            if scheme in ("s3", "s3a"):
                cfg, client, retry, provider = s3_config(storage_options)
                base = S3Store(bucket, prefix=prefix.strip("/") or None, config=cfg, client_options=client or None,
                               retry_config=retry, credential_provider=provider)
            else:
                cfg, client = gcs_config(storage_options)
                base = GCSStore(bucket, prefix=prefix.strip("/") or None, config=cfg, client_options=client or None,
                                retry_config=RETRY)
        except (ValueError, OSError):  # an option obstore cannot take: fsspec, as before
            return None
        store = _STORES[key] = ObjectStore(base, read_only=read_only)
    return store
