"""Check image URLs before anything is paid: a record whose image the API cannot fetch is skipped.

Each http(s) image URL gets a HEAD request; where HEAD is refused or answered unlike a GET
(405, 501, or a 403 from a URL signed for GET only), a ranged GET of its first 1024 bytes
decides, and its bytes are sniffed too. A 403, 404, time-out, connection failure, a content
type that is not an image the API takes, or a size over the API's image limit makes a reason
such as `image_url: HTTP 403` or `image_url: timed out after 10s`; the record goes to
skipped.jsonl with it, not into a batch. Checks run concurrently with the standard library
only: 16 at once (10 s time-out each, by default), at most 4 at once on one host.

A host is remembered for the run. Until it answers (any HTTP status, a 404 too) it is tried one
URL at a time; when 3 tries get no answer (connection refused, a DNS failure, a time-out) it is
given up and its other URLs fail at once, without a try each: `image_url: host img.example
unreachable (3 tries timed out; not checked again)`. A host that answered once is checked URL
by URL to the end. So a window of N URLs whose busiest host holds n takes at most
2 x timeout x (ceil(N / 16) + ceil(n / 4) + 4) (each URL a HEAD and maybe a GET; `bound`), and
a dead host costs 3 time-outs, not one per URL.

URLs that passed are cached with the time of the check in a JSON file in the step's build
directory (written whole, atomically), so a rerun within 24 hours does not check them again.
Failures are kept there too, with their reasons, but always checked again: a URL fixed since
(a repository made public) is sent on the next run.

Used as `Preflight(...).filter(items, url_of)` (build.step_requests) or `.check(urls)`; the
command scripts/preflight.py checks a dataset's or a requests file's URLs on their own.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import note

# isort: split

import http.client
import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, TypeVar

from br.files import write_text
from br.limits import MAX_IMAGE_BYTES
from br.prompts.images.formats import ACCEPTED, describe_format, sniff
from br.prompts.images.identity import image_parts

T = TypeVar("T")
DEFAULT_TIMEOUT = 10.0
DEFAULT_WORKERS = 16
PER_HOST = 4  # checks at once on one host (once it has answered; 1 until then)
GIVE_UP_AFTER = 3  # tries without an answer before a host is given up
NO_ANSWER = ("timed out", "cannot connect", "cannot fetch")  # reasons where no HTTP answer came
DEFAULT_TTL = 24 * 3600.0
WINDOW = 2000  # records held at once by `filter`, so memory does not grow with the dataset
SAVE_EVERY = 30.0  # seconds: `filter` saves the cache at most this often, and the caller at the end
RANGE_BYTES = 1024
# Types that say nothing about the bytes: a ranged GET sniffs them. (UNVERIFIED: whether the
# API's fetcher accepts such a response when the bytes are an image; we accept it then.)
GENERIC_TYPES = {"", "application/octet-stream", "binary/octet-stream"}
USER_AGENT = "batch-requests-preflight/1 (image URL check before a Batch API upload)"


def check_url(url: str, timeout: float = DEFAULT_TIMEOUT) -> str | None:
    """Why the API could not fetch this image URL, or None if it looks fine."""
    try:
        with open_url(url, "HEAD", timeout) as response:
            reason = verdict(response, None)
            ctype = content_type(response)
        if reason or ctype not in GENERIC_TYPES:
            return reason
    except urllib.error.HTTPError as e:
        e.close()
        if e.code in (404, 410):
            return f"HTTP {e.code}"
        # Refused (405, 501) or answered unlike a GET (URLs signed for GET answer HEAD 403):
        # the ranged GET below decides.
    except Exception as e:  # every failure to fetch is a reason, not a crash
        return failure(e, timeout)
    try:
        with open_url(url, "GET", timeout) as response:
            return verdict(response, response.read(RANGE_BYTES))
    except urllib.error.HTTPError as e:
        e.close()
        return f"HTTP {e.code}"
    except Exception as e:
        return failure(e, timeout)


def open_url(url: str, method: str, timeout: float) -> Any:
    headers = {"User-Agent": USER_AGENT}
    if method == "GET":
        headers["Range"] = f"bytes=0-{RANGE_BYTES - 1}"
    request = urllib.request.Request(url, method=method, headers=headers)
    return urllib.request.urlopen(request, timeout=timeout)


def content_type(response: Any) -> str:
    return (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()


def verdict(response: Any, head: bytes | None) -> str | None:
    """A reason from a successful response's headers (and first bytes, for a GET)."""
    ctype = content_type(response)
    if ctype not in ACCEPTED and ctype not in GENERIC_TYPES:
        hint = ", not PNG, JPEG, WebP or GIF" if ctype.startswith("image/") else ""
        return f"content type {ctype}{hint}"
    size = total_size(response)
    if size is not None and size > MAX_IMAGE_BYTES:
        return f"{size / 1e6:.1f} MB, over the API's {MAX_IMAGE_BYTES / 1e6:.0f} MB image limit"
    if head is not None and sniff(head) is None:
        what = describe_format(head)
        return f"content type {ctype or 'missing'}, but the bytes are {what}".replace(
            "are not an image", "not an image"
        )
    return None


def total_size(response: Any) -> int | None:
    """The whole body's size: from Content-Range of a 206, else Content-Length."""
    content_range = response.headers.get("Content-Range") or ""
    if response.status == 206 and "/" in content_range:
        total = content_range.rsplit("/", 1)[1].strip()
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length") or ""
    return int(length) if length.strip().isdigit() and response.status == 200 else None


def failure(e: BaseException, timeout: float) -> str:
    if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError):
        inner = e.reason
        if isinstance(inner, TimeoutError):
            return f"timed out after {timeout:g}s"
        return f"cannot connect ({str(inner)[:160]})"
    if isinstance(e, TimeoutError):
        return f"timed out after {timeout:g}s"
    if isinstance(e, http.client.HTTPException | OSError | ValueError):
        return f"cannot fetch ({type(e).__name__}: {str(e)[:160]})"
    raise e


def host_of(url: str) -> str:
    """The host a URL is fetched from, as its failures are remembered: `img.example`, or
    `img.example:8080` for a port other than the scheme's own."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        return parts.netloc.lower()
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return host if port is None or port == default else f"{host}:{port}"


def bound(urls: int, busiest: int, timeout: float, workers: int, per_host: int = PER_HOST) -> float:
    """Seconds a check of `urls` URLs, `busiest` of them on one host, takes at most.

    Each URL costs at most 2 x timeout (a HEAD, then maybe a ranged GET). While a thread is idle,
    every host with URLs left is at its limit; so the time is at most the time all threads are
    busy (urls / workers checks), plus the busiest host at its limit (busiest / per_host), its
    tries one at a time before it answers (3), and the last check (1).
    """
    if not urls:
        return 0.0
    rounds = math.ceil(urls / workers) + math.ceil(busiest / per_host) + GIVE_UP_AFTER + 1
    return 2 * timeout * rounds


class Preflight:
    """Checks URLs concurrently, remembering those that passed in a cache file and, for the
    run, the hosts that answered and those given up."""

    def __init__(
        self,
        cache: Path | None = None,
        field: str = "image_url",
        timeout: float = DEFAULT_TIMEOUT,
        workers: int = DEFAULT_WORKERS,
        ttl: float = DEFAULT_TTL,
        offline: bool = False,
        per_host: int = PER_HOST,
    ) -> None:
        """`offline` (for `make plan`): check nothing; use what the cache knows (failures too)."""
        self.cache, self.field, self.timeout = cache, field, timeout
        self.workers, self.ttl, self.offline = workers, ttl, offline
        self.passed: dict[str, float] = {}
        self.failed: dict[str, list[Any]] = {}
        self.counts: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.seconds = 0.0
        self.saved_at = time.monotonic()
        self.per_host = per_host
        self.answered: set[str] = set()  # hosts that gave an HTTP answer in this run
        self.misses: dict[str, list[str]] = {}  # a host's tries without an answer, until then
        self.given_up: dict[str, str] = {}  # host -> the reason its other URLs get
        # offline: the URLs not checked yet, by host, and a bound on the time to check them
        self.unchecked_hosts: Counter[str] = Counter()
        self.seconds_at_most = 0.0
        if cache is not None and cache.exists():
            try:
                data = json.loads(cache.read_text(encoding="utf-8"))
                self.passed = {str(k): float(v) for k, v in data.get("passed", {}).items()}
                if offline:  # otherwise only this run's failures are kept
                    self.failed = {str(k): list(v) for k, v in data.get("failed", {}).items()}
            except (ValueError, AttributeError, TypeError):
                note(f"warning: {cache} is not a preflight cache; checking every URL again")

    def check(self, urls: Iterable[str]) -> dict[str, str | None]:
        """Each distinct URL's reason (prefixed with the field name), or None if it passed."""
        start, now = time.monotonic(), time.time()
        results: dict[str, str | None] = {}
        todo = []
        unchecked: Counter[str] = Counter()  # offline: by host
        for url in dict.fromkeys(urls):
            if now - self.passed.get(url, -1e18) < self.ttl:
                results[url] = None
                self.counts["cached"] += 1
            elif self.offline and url in self.failed:
                reason = str(self.failed[url][0])
                self.reasons[reason] += 1
                self.counts["cached"] += 1
                results[url] = f"{self.field}: {reason}"
            elif self.offline:
                self.counts["unchecked"] += 1
                results[url] = None
                unchecked[host_of(url)] += 1
            else:
                todo.append(url)
        if unchecked:  # the time `filter` will take on this window, at most
            self.unchecked_hosts.update(unchecked)
            busiest = max(unchecked.values())
            self.seconds_at_most += bound(
                unchecked.total(), busiest, self.timeout, self.workers, self.per_host
            )
        for url, reason in self.run(todo):
            self.counts["checked"] += 1
            if reason is None:
                self.passed[url] = now
                self.failed.pop(url, None)
                results[url] = None
            else:
                self.passed.pop(url, None)
                self.failed[url] = [reason, now]
                self.reasons[reason] += 1
                results[url] = f"{self.field}: {reason}"
        self.seconds += time.monotonic() - start
        return results

    def run(self, urls: list[str]) -> Iterator[tuple[str, str | None]]:
        """Each URL with its reason (None: passed), as the checks end.

        Threads go to hosts in turn, at most `per_host` at once on a host that answered, one
        on a host that has not yet; a host given up has its URLs failed without a try."""
        queues: dict[str, deque[str]] = {}
        for url in urls:
            queues.setdefault(host_of(url), deque()).append(url)
        ready = deque(queues)  # hosts that may start a check now
        waiting = set(ready)
        running: Counter[str] = Counter()
        pending: dict[Future[str | None], tuple[str, str]] = {}
        with ThreadPoolExecutor(max(1, min(self.workers, len(urls)))) as pool:
            while ready or pending:
                while ready and len(pending) < self.workers:
                    host = ready.popleft()
                    waiting.discard(host)
                    queue = queues[host]
                    if host in self.given_up:
                        while queue:
                            self.counts["given_up"] += 1
                            yield queue.popleft(), self.given_up[host]
                        continue
                    if not queue or running[host] >= self.limit(host):
                        continue
                    url = queue.popleft()
                    pending[pool.submit(check_url, url, self.timeout)] = (host, url)
                    running[host] += 1
                    if queue and running[host] < self.limit(host):
                        ready.append(host)
                        waiting.add(host)
                if not pending:
                    continue
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    host, url = pending.pop(future)
                    running[host] -= 1
                    reason = future.result()
                    self.learn(host, reason)
                    yield url, reason
                    if queues[host] and host not in waiting:
                        ready.append(host)
                        waiting.add(host)

    def limit(self, host: str) -> int:
        """Checks at once on a host: one until it answers (a URL without a host: any)."""
        return self.per_host if host in self.answered or not host else 1

    def learn(self, host: str, reason: str | None) -> None:
        """What a check says of its host: it answers, or one more try without an answer."""
        if not host or host in self.answered or host in self.given_up:
            return
        if reason is None or not reason.startswith(NO_ANSWER):
            self.answered.add(host)
            self.misses.pop(host, None)
            return
        misses = self.misses.setdefault(host, [])
        misses.append(reason)
        if len(misses) >= GIVE_UP_AFTER:
            kinds = {m.split(" (")[0].split(" after")[0] for m in misses}
            what = {"timed out": "timed out", "cannot connect": "could not connect"}
            how = what.get(kinds.pop(), "failed") if len(kinds) == 1 else "failed"
            self.given_up[host] = (
                f"host {host} unreachable ({len(misses)} tries {how}; not checked again)"
            )
            del self.misses[host]

    def filter(
        self, items: Iterable[T], url_of: Callable[[T], str | None], window: int = WINDOW
    ) -> Iterator[tuple[T, str | None]]:
        """Each item with the reason its URL fails (None: passed, or no URL), in order.

        Items are checked a window at a time, so a stream of any length holds `window` of
        them; the cache is saved every 30 s, so an interrupted run keeps most of its checks.
        Call `save` at the end.
        """
        buffer: list[T] = []
        for item in items:
            buffer.append(item)
            if len(buffer) >= window:
                yield from self.flush(buffer, url_of)
                buffer = []
        yield from self.flush(buffer, url_of)

    def flush(
        self, buffer: list[T], url_of: Callable[[T], str | None]
    ) -> Iterator[tuple[T, str | None]]:
        if not buffer:
            return
        urls = [url_of(item) for item in buffer]
        verdicts = self.check(u for u in urls if u)
        if time.monotonic() - self.saved_at > SAVE_EVERY:
            self.save()
        for item, url in zip(buffer, urls, strict=True):
            yield item, verdicts.get(url) if url else None

    def save(self) -> None:
        self.saved_at = time.monotonic()
        if self.cache is None:
            return
        now = time.time()
        data = {
            "passed": {u: t for u, t in sorted(self.passed.items()) if now - t < self.ttl},
            "failed": {u: v for u, v in sorted(self.failed.items())},
        }
        write_text(self.cache, json.dumps(data, indent=0, ensure_ascii=False) + "\n")

    def summary(self) -> str:
        checked, cached = self.counts["checked"], self.counts["cached"]
        failed = sum(self.reasons.values())
        passed = checked + cached - failed
        total = checked + cached + self.counts["unchecked"]
        line = (
            f"preflight: {total} image URL(s): {passed} passed"
            + (f" ({cached} within {self.ttl / 3600:g} h, from the cache)" if cached else "")
            + f", {failed} failed"
        )
        if failed:
            top = self.reasons.most_common(4)
            line += " (" + ", ".join(f"{n} {r}" for r, n in top)
            line += ", ..." if len(self.reasons) > 4 else ""
            line += ")"
        unchecked = self.counts["unchecked"]
        if unchecked:
            line += f", {unchecked} not checked yet"
        if self.given_up:
            hosts = len(self.given_up)
            line += f", {hosts} host{'s' * (hosts > 1)} unreachable"
            line += f" ({self.counts['given_up']} URL(s) failed without a try)"
        return line + f", {checked} checked in {self.seconds:.1f}s"


def remote_url(request: dict[str, Any]) -> str | None:
    """The first http(s) image URL of a request line (the pipeline sends one image a request)."""
    for url, _ in image_parts(request.get("body")):
        if url.lower().startswith(("http://", "https://")):
            return url
    return None
