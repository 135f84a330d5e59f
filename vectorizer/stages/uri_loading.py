"""`loading_uri`: read the document a row points at (local path, file://, http(s)://, s3://).

Reading is blocking I/O (smart_open and boto3), so it runs in a thread under an overall time
limit, and never reads past the maximum document size. Failures are RowError("loading"): the
key is charged and backs off like at any other stage. Brief network trouble (timeouts, resets,
5xx, throttling) is retried here a couple of times first. Messages quote the URI without
userinfo or signed query parameters, so no credential reaches an error row or a log line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from vectorizer.config import UriLoading
from vectorizer.errors import RowError, VectorizerError
from vectorizer.imports import import_module
from vectorizer.stages import document_settings
from vectorizer.stages.filetypes import guess_file_type
from vectorizer.stages.payload import Document, Payload

log = logging.getLogger(__name__)

# pgai's session name: IAM trust policies written for pgai's worker may require it.
ROLE_SESSION_NAME = "timescale-vectorizer"
EXTERNAL_ID_ENV = "AWS_ASSUME_ROLE_EXTERNAL_ID"
# Assumed credentials are renewed this long before they expire, so no read starts with a
# token that lapses mid-transfer.
ROLE_REFRESH_MARGIN = timedelta(minutes=5)

# In-place attempts for transient errors; later ones wait a little longer each time.
TRANSIENT_ATTEMPTS = 3
TRANSIENT_BACKOFF_SECONDS = 0.5
# Per socket operation; the whole read is bounded by VECTORIZER_LOAD_TIMEOUT.
SOCKET_TIMEOUT_SECONDS = 60.0
READ_CHUNK_BYTES = 1024 * 1024

# Query parameters whose values authenticate a URL (presigned S3/GCS/Azure links, tokens).
_SECRET_PARAM = re.compile(
    r"signature|credential|token|secret|password|passwd|key|sig$|^sig|auth", re.IGNORECASE
)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")

_S3_PERMANENT_CODES = frozenset(
    {
        "NoSuchKey",
        "NoSuchBucket",
        "NoSuchVersion",
        "NotFound",
        "404",
        "AccessDenied",
        "403",
        "Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidBucketName",
        "InvalidObjectState",
    }
)
_S3_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "Throttling",
        "ThrottlingException",
        "InternalError",
        "ServiceUnavailable",
        "503",
        "500",
    }
)


class UriLoader:
    """Fetches the document named by one column of the row (`loading_uri`)."""

    def __init__(self, config: UriLoading) -> None:
        self.column_name = config.column_name
        self.role_arn = config.aws_role_arn
        self.max_bytes = document_settings.max_document_bytes()
        self.timeout = document_settings.load_timeout()

    async def load(self, row: Mapping[str, Any]) -> Payload:
        try:
            value = row[self.column_name]
        except KeyError:
            # every row comes from the same table: a missing column is missing for all of them
            raise VectorizerError(
                f'loading_uri: the source table has no column "{self.column_name}"', step="loading"
            ) from None
        # NULL or empty means "no document": no chunks and no error, as in pgai.
        if value is None:
            return ""
        if not isinstance(value, str):
            raise RowError(
                "loading",
                f'loading_uri: column "{self.column_name}" holds a {type(value).__name__} '
                "value; expected text holding a path or URI",
            )
        uri = value.strip()
        if not uri:
            return ""
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.fetch, uri), self.timeout)
        except TimeoutError:
            # The thread cannot be stopped; its sockets time out on their own and it ends.
            raise RowError(
                "loading",
                f"loading_uri: reading {redact_uri(uri)} took longer than {self.timeout:g}s "
                f"(limit set by {document_settings.LOAD_TIMEOUT_ENV})",
            ) from None

    def fetch(self, uri: str) -> Payload:
        """Read `uri` (blocking), retrying transient failures in place."""
        for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
            try:
                content, content_type = self._read(uri)
            except (RowError, VectorizerError):
                raise
            except Exception as exc:
                if _is_transient(exc) and attempt < TRANSIENT_ATTEMPTS:
                    log.info(
                        "loading_uri: transient error reading %s (attempt %s): %s",
                        redact_uri(uri),
                        attempt,
                        _reason(exc),
                    )
                    time.sleep(TRANSIENT_BACKOFF_SECONDS * attempt)
                    continue
                raise RowError(
                    "loading", f"loading_uri: cannot read {redact_uri(uri)}: {_reason(exc)}"
                ) from exc
            return _payload(content, uri, content_type)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _read(self, uri: str) -> tuple[bytes, str | None]:
        smart_open = import_module("smart_open")  # in a fetch thread

        with smart_open.open(uri, "rb", transport_params=self._transport_params(uri)) as stream:
            content_type = _content_type(stream)
            return _read_capped(stream, self.max_bytes, uri), content_type

    def _transport_params(self, uri: str) -> dict[str, Any]:
        scheme = urlsplit(uri).scheme.lower()
        if scheme in ("s3", "s3a", "s3n", "s3u"):
            return {"client": _S3_CLIENTS.client(self.role_arn)}
        if scheme in ("http", "https"):
            return {"timeout": SOCKET_TIMEOUT_SECONDS}
        return {}


def _payload(content: bytes, uri: str, content_type: str | None) -> Payload:
    if not content:
        return ""
    safe = redact_uri(uri)
    return Document(
        content=content,
        file_type=guess_file_type(content, safe, content_type),
        source=safe,
        content_type=content_type,
    )


def _read_capped(stream: IO[bytes], limit: int, uri: str) -> bytes:
    buffer = bytearray()
    while True:
        # One byte past the limit is enough to know the document is too large.
        chunk = stream.read(min(READ_CHUNK_BYTES, limit + 1 - len(buffer)))
        if not chunk:
            return bytes(buffer)
        buffer += chunk
        if len(buffer) > limit:
            raise RowError(
                "loading",
                f"loading_uri: {redact_uri(uri)} is larger than the "
                f"{document_settings.describe_size(limit)} limit on documents "
                f"(set by {document_settings.MAX_DOCUMENT_BYTES_ENV})",
                retryable=False,
            )


def _content_type(stream: object) -> str | None:
    # smart_open's HTTP reader keeps the `requests` response; other readers have none.
    response = getattr(stream, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get("Content-Type")
    return str(value) if value else None


# --- S3 clients -----------------------------------------------------------------------------


@dataclass
class _AssumedRole:
    client: Any
    expires: datetime


class _S3ClientCache:
    """One S3 client for the default credential chain, one per assumed role until near expiry.

    boto3 clients are thread-safe but creating them is not (nor cheap), hence the lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._default: Any = None
        self._roles: dict[str, _AssumedRole] = {}

    def client(self, role_arn: str | None) -> Any:
        with self._lock:
            if role_arn is None:
                if self._default is None:
                    self._default = _new_session().client("s3", config=_client_config())
                return self._default
            cached = self._roles.get(role_arn)
            if cached is None or cached.expires - ROLE_REFRESH_MARGIN <= datetime.now(UTC):
                cached = _assume_role(role_arn)
                self._roles[role_arn] = cached
            return cached.client

    def clear(self) -> None:
        with self._lock:
            self._default = None
            self._roles.clear()


_S3_CLIENTS = _S3ClientCache()


def clear_s3_clients() -> None:
    """Forget cached clients and assumed credentials (tests switch endpoints between runs)."""
    _S3_CLIENTS.clear()


def _new_session() -> Any:
    boto3 = import_module("boto3")

    # A session per client: boto3's default session is shared and not thread-safe.
    return boto3.session.Session()


def _client_config() -> Any:
    from botocore.config import Config

    # Transient errors are retried by `UriLoader.fetch`; botocore retrying too would multiply.
    return Config(
        connect_timeout=SOCKET_TIMEOUT_SECONDS,
        read_timeout=SOCKET_TIMEOUT_SECONDS,
        retries={"total_max_attempts": 1},
    )


def _assume_role(role_arn: str) -> _AssumedRole:
    from botocore.exceptions import ClientError

    request: dict[str, str] = {"RoleArn": role_arn, "RoleSessionName": ROLE_SESSION_NAME}
    external_id = os.environ.get(EXTERNAL_ID_ENV)
    if external_id:
        request["ExternalId"] = external_id
    try:
        response = _new_session().client("sts", config=_client_config()).assume_role(**request)
    except ClientError as exc:
        if _is_transient(exc):
            raise
        # A role we may not assume fails every row alike: the vectorizer backs off instead.
        raise VectorizerError(
            f"loading_uri: cannot assume role {role_arn}: {_reason(exc)}", step="loading"
        ) from exc
    credentials = response["Credentials"]
    session = _session_with(credentials)
    expires = credentials["Expiration"]
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    log.info("loading_uri: assumed role %s until %s", role_arn, expires.isoformat())
    return _AssumedRole(client=session.client("s3", config=_client_config()), expires=expires)


def _session_with(credentials: Mapping[str, Any]) -> Any:
    boto3 = import_module("boto3")

    return boto3.session.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


# --- classifying and describing errors ------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _is_transient(exc: BaseException) -> bool:
    """Worth another try in a moment: timeouts, resets, throttling and server errors."""
    for error in _chain(exc):
        if isinstance(error, FileNotFoundError | PermissionError | IsADirectoryError):
            return False
        if isinstance(error, TimeoutError | ConnectionError):
            return True
        verdict = _http_verdict(error)
        if verdict is None:
            verdict = _boto_verdict(error)
        if verdict is not None:
            return verdict
    return False


def _http_verdict(error: BaseException) -> bool | None:
    try:
        import requests
    except ImportError:  # pragma: no cover - smart_open[http] brings requests
        return None
    if isinstance(error, requests.HTTPError):
        status = error.response.status_code if error.response is not None else 0
        return status >= 500 or status in (408, 429)
    if isinstance(error, requests.ConnectionError | requests.Timeout):
        return True
    return None


def _boto_verdict(error: BaseException) -> bool | None:
    try:
        from botocore import exceptions
    except ImportError:  # pragma: no cover - boto3 is a dependency
        return None
    if isinstance(error, exceptions.ClientError):
        details = error.response.get("Error", {})
        code = str(details.get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _S3_PERMANENT_CODES:
            return False
        return code in _S3_TRANSIENT_CODES or status >= 500
    if isinstance(
        error,
        exceptions.EndpointConnectionError
        | exceptions.ConnectTimeoutError
        | exceptions.ReadTimeoutError
        | exceptions.ConnectionClosedError,
    ):
        return True
    return None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return redact_urls(text)


def redact_uri(uri: str) -> str:
    """`uri` without userinfo and without the values of authenticating query parameters."""
    if "://" not in uri:
        return uri
    try:
        parts = urlsplit(uri)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode(
                [(key, "REDACTED" if _SECRET_PARAM.search(key) else value) for key, value in pairs],
                safe="/:",
            )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        # Unparseable: keep only the scheme and host part we can trust not to hold a secret.
        return uri.split("?", 1)[0].split("@")[-1]


def redact_urls(text: str) -> str:
    """Every URL inside `text` passed through `redact_uri` (library messages quote URLs)."""
    return _URL_IN_TEXT.sub(lambda match: redact_uri(match.group(0)), text)
