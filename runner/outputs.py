"""Where results go and inputs come from: a directory (the chart's volume) or s3://bucket/prefix.

Writes are all-or-nothing: a directory gets a temporary name then `os.replace`, S3 gets one
upload per object, so a retried or killed job never leaves half a file under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from runner.contract import ErrorKind
from runner.errors import PermanentError, RunnerError, classify_os_error, exception_chain
from runner.rules import path_refusal

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class Location(Protocol):
    def uri(self, key: str) -> str: ...

    def store(self, local: Path, key: str, content_type: str) -> str: ...

    def fetch(self, ref: str, scratch: Path) -> Path: ...


def safe_key(ref: str) -> str:
    """A relative key with no way out of the location; the rule is the one the controller
    applies at claim (`runner.rules.path_refusal`), checked again where the file is opened."""
    problem = path_refusal(ref)
    if problem is not None:
        raise PermanentError(problem)
    return ref


class DirectoryLocation:
    def __init__(self, root: Path) -> None:
        self.root = root

    def uri(self, key: str) -> str:
        return str(self.root / key)

    def store(self, local: Path, key: str, content_type: str) -> str:
        final = self.root / key
        tmp = final.with_name(f".{final.name}.partial-{os.getpid()}")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, tmp)
            os.replace(tmp, final)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise classify_os_error(e, f"could not write {final}") from None
        return str(final)

    def fetch(self, ref: str, scratch: Path) -> Path:
        if ref.startswith("s3://"):
            return S3Location.from_uri(ref).fetch_uri(ref, scratch)
        path = self.root / safe_key(ref)
        if not path.is_file():
            raise PermanentError(f"input {ref!r} does not exist in {self.root} (permanent)")
        return path


class S3Location:
    """s3://bucket/prefix through boto3; endpoint and credentials from the usual AWS_* env."""

    def __init__(self, bucket: str, prefix: str) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client: S3Client | None = None

    @classmethod
    def from_uri(cls, uri: str) -> S3Location:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise PermanentError(f"{uri!r} names no bucket; use s3://bucket/prefix (permanent)")
        return cls(bucket, prefix)

    @property
    def client(self) -> S3Client:
        if self._client is None:
            try:
                import boto3  # noqa: PLC0415 - optional: only object-storage users install it
            except ImportError:
                raise PermanentError(
                    "the output location is s3://…, but boto3 is not installed; "
                    "install audiojob-operator[s3] (permanent)"
                ) from None
            self._client = boto3.client("s3")
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def store(self, local: Path, key: str, content_type: str) -> str:
        try:
            self.client.upload_file(
                str(local), self.bucket, self._key(key), ExtraArgs={"ContentType": content_type}
            )
        except Exception as e:
            raise s3_error(e, f"could not upload to {self.uri(key)}") from None
        return self.uri(key)

    def fetch(self, ref: str, scratch: Path) -> Path:
        if ref.startswith("s3://"):
            return S3Location.from_uri(ref).fetch_uri(ref, scratch)
        return self.fetch_uri(self.uri(safe_key(ref)), scratch)

    def fetch_uri(self, uri: str, scratch: Path) -> Path:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        dest = scratch / ("input-" + PurePosixPath(key).name)
        try:
            self.client.download_file(bucket, key, str(dest))
        except Exception as e:
            raise s3_error(e, f"could not download {uri}") from None
        return dest


def s3_error(exc: Exception, doing: str) -> RunnerError:
    """boto3's failure as a sentence: missing things and refusals are permanent."""
    # upload_file wraps the ClientError in S3UploadFailedError; the response is on the cause.
    response: Any = next(
        (r for e in exception_chain(exc) if isinstance(r := getattr(e, "response", None), dict)),
        None,
    )
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        transient = status >= 500 or status == 429 or code in ("SlowDown", "RequestTimeout")
        kind: ErrorKind = "transient" if transient else "permanent"
        label = code or f"HTTP {status}"
        if code in ("404", "NoSuchKey"):
            label = "no such object"
        return RunnerError(f"{doing}: {label} ({kind})", kind)
    if isinstance(exc, OSError) and exc.errno not in (None, errno.EEXIST):
        return classify_os_error(exc, doing)
    # botocore's connection errors (EndpointConnectionError, ConnectTimeout…) carry no response.
    return RunnerError(f"{doing}: {exc} (transient)", "transient")


def open_location(spec: str) -> DirectoryLocation | S3Location:
    if not spec:
        raise PermanentError("AUDIOJOB_OUTPUT is empty; set a directory or s3://bucket/prefix")
    if spec.startswith("s3://"):
        return S3Location.from_uri(spec)
    return DirectoryLocation(Path(spec))
