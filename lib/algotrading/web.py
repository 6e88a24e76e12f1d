"""HTTP calls to the outside (the vendor feed, Alpaca, the public data set's download) with the
rules every one of them needs:

- https only, except an explicit loopback host (127.0.0.1, ::1, localhost) for local tests and
  fakes: a cleartext URL would carry API keys in the open.
- A request carrying credentials never follows a redirect to another origin (urllib copies every
  header onto the redirected request, keys included); any request refuses https -> http.
- An overall deadline as well as the socket timeout (a server sending one byte every half
  second never trips a per-read timeout), and a cap on the bytes read.
- Every failure, a truncated body (`http.client.IncompleteRead`) included, is an `HttpError`
  naming the URL.

Limits (`algotrading.limits`): ALGO_HTTP_DEADLINE (seconds, default 120) and ALGO_HTTP_MAX_BYTES
(default 64 MiB) for API calls; downloads to a file take their own (`sources.fetch`:
ALGO_DOWNLOAD_DEADLINE, ALGO_DOWNLOAD_MAX_BYTES).
"""

from __future__ import annotations

import http.client
import ipaddress
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

from algotrading import limits
from algotrading.errors import AlgotradingError

CHUNK = 1 << 16


class HttpError(AlgotradingError, OSError):
    """An HTTP call refused or failed; `status` is the HTTP status when the server answered one."""

    def __init__(self, message: str, status: int | None = None, detail: str = ""):
        super().__init__(message)
        self.status, self.detail = status, detail


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str) -> str:
    """`url` if it is https, or http to a loopback host; else an HttpError naming `what`."""
    scheme, host, _ = origin(url)
    if scheme == "https" and host:
        return url
    if scheme == "http" and loopback(host):
        return url
    raise HttpError(f"{what}: {url!r} is not an https URL (cleartext http is allowed only to "
                    "127.0.0.1, ::1 or localhost, for local tests)")


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to an allowed URL, and with credentials only within the origin."""

    def __init__(self, credentials: bool):
        self.credentials = credentials

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> Any:
        newurl = urllib.parse.urljoin(req.full_url, newurl)
        check_url(newurl, f"{req.full_url} redirected")
        if origin(req.full_url)[0] == "https" and origin(newurl)[0] != "https":
            raise HttpError(f"{req.full_url}: redirected from https to {newurl}; not followed")
        if self.credentials and origin(newurl) != origin(req.full_url):
            raise HttpError(f"{req.full_url}: redirected (HTTP {code}) to another origin "
                            f"({urllib.parse.urlsplit(newurl).netloc}); not followed, so the "
                            "API keys are not sent there")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def opener(credentials: bool) -> Callable[..., Any]:
    """The `open` of an opener with the redirect rule (tests replace this to go offline)."""
    return urllib.request.build_opener(_Redirects(credentials)).open


def _drain(resp: Any, url: str, sink: Callable[[bytes], None], max_bytes: float, end: float,
           deadline: float, names: tuple[str, str]) -> int:
    total = 0
    length = resp.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise HttpError(f"{url}: response of {int(length):,} bytes is over the limit of "
                        f"{int(max_bytes):,} ({limits.LIMITS[names[0]].env} raises it)")
    while True:
        if time.monotonic() > end:
            raise HttpError(f"{url}: no complete response within {deadline:g} s "
                            f"({limits.LIMITS[names[1]].env} raises the deadline)")
        chunk = resp.read1(CHUNK)  # returns what arrived, so the deadline is checked between
        if not chunk:
            short = getattr(resp, "length", None)  # http.client's bytes still owed
            if short:
                raise HttpError(f"{url}: connection closed {short:,} bytes before the end of the "
                                f"response (IncompleteRead)")
            return total
        total += len(chunk)
        if total > max_bytes:
            raise HttpError(f"{url}: response over the limit of {int(max_bytes):,} bytes "
                            f"({limits.LIMITS[names[0]].env} raises it)")
        sink(chunk)


def request(url: str, *, method: str = "GET", data: bytes | None = None,
            headers: Mapping[str, str] | None = None, credentials: bool = False,
            timeout: float = 30.0, caps: tuple[str, str] = ("http_bytes", "http_seconds"),
            into: BinaryIO | None = None) -> bytes:
    """The body of `url` (or written to `into`, then b""), under the rules in the module doc.
    `credentials`: the headers hold keys (no cross-origin redirect); `caps`: the size and
    deadline limits (`algotrading.limits` names). HTTP error statuses raise HttpError with
    `status` and the start of the body in `detail`."""
    check_url(url, "HTTP request")
    max_bytes, deadline = limits.value(caps[0]), limits.value(caps[1])
    end = time.monotonic() + deadline
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    parts: list[bytes] = []
    sink = into.write if into is not None else parts.append
    try:
        with opener(credentials)(req, timeout=min(timeout, deadline)) as resp:
            _drain(resp, url, sink, max_bytes, end, deadline, caps)
    except urllib.error.HTTPError as exc:
        detail = exc.read(200).decode(errors="replace") if exc.fp is not None else ""
        raise HttpError(f"{url}: HTTP {exc.code} {detail}", exc.code, detail) from None
    except HttpError:
        raise
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, IncompleteRead
        reason = getattr(exc, "reason", None) or exc
        raise HttpError(f"{url}: {type(exc).__name__}: {reason}") from None
    return b"".join(parts)
