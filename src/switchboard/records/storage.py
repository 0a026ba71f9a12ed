"""Where recordings live: a local directory by default, or an S3-compatible bucket.

Methods are blocking; ``CallStore`` calls them on its own thread pool, never on the event loop.
Keys are relative paths such as ``2026/12/01/call-CA123.flac``.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from switchboard.errors import ConfigError
from switchboard.private_files import private_dir, write_private

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,300}$")


def _checked(key: str) -> str:
    if not _KEY.match(key) or ".." in key:
        raise ValueError(f"invalid recording key {key!r}")
    return key


class RecordingStorage(ABC):
    """Put, get and delete one recording by key."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """The recording's bytes, or None if there is none under ``key``."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the recording; deleting a missing one is not an error."""


class LocalRecordingStorage(RecordingStorage):
    """Recordings as files under one directory; directories it makes are 0700, files 0600."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / _checked(key)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        private_dir(path.parent)  # a caller's voice: owner-only, whatever the process's umask
        partial = path.with_name(path.name + ".partial")
        write_private(partial, data)
        partial.replace(path)  # readers never see half a file

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3RecordingStorage(RecordingStorage):
    """Recordings as objects in an S3-compatible bucket (AWS, MinIO, R2...)."""

    def __init__(
        self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None, client: Any = None
    ):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3}),
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{_checked(key)}" if self.prefix else _checked(key)

    def put(self, key: str, data: bytes) -> None:
        self._client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, ContentType="audio/flac"
        )

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._key(key))


def recording_storage(url: str, *, s3_endpoint_url: str | None = None) -> RecordingStorage:
    """``s3://bucket/prefix`` or a directory path."""
    if url.startswith("s3://"):
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ConfigError(f"SWITCHBOARD_RECORDINGS_URL {url!r}: no bucket named")
        return S3RecordingStorage(bucket, prefix, endpoint_url=s3_endpoint_url)
    if "://" in url:
        raise ConfigError(
            f"SWITCHBOARD_RECORDINGS_URL {url!r}: expected a directory or s3://bucket/prefix"
        )
    return LocalRecordingStorage(url)
