"""Shared fixtures. The S3-protocol server for remote-store tests lives in s3_server.py."""

from s3_server import s3_bucket, s3_server  # noqa: F401  (fixtures, found by name)
