"""What the MCP end-to-end test (tools/mcp_test.py) checks with: failing a check, reporting
one, parsing instants and days, polling, and the HTTP client of the raw requests."""

import asyncio
import datetime as dt
import json
import time

import httpx2

ZONE = "Europe/Berlin"
POLL_SECONDS = 10.0

checks = 0


class Failure(Exception):
    """A check that did not hold."""


def fail(message):
    raise Failure(message)


def check(condition, message):
    if not condition:
        raise Failure(message)


def ok(message):
    global checks
    checks += 1
    print(f"ok: {message}", flush=True)


def short(value, limit=600):
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + "…"


def rfc3339(text, what):
    """Parses an RFC 3339 instant (with `Z` or an offset) or fails naming `what`."""
    check(isinstance(text, str), f"{what}: expected an RFC 3339 string, got {text!r}")
    try:
        instant = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{what}: not an RFC 3339 instant: {text!r}")
    check(instant.tzinfo is not None, f"{what}: an instant without an offset: {text!r}")
    return instant


def day(text, what):
    """Parses a `YYYY-MM-DD` day or fails naming `what`."""
    try:
        return dt.date.fromisoformat(text)
    except (TypeError, ValueError):
        fail(f"{what}: not a YYYY-MM-DD day: {text!r}")


def zone():
    """The test's time zone; the checks of days and day starts need the tz database."""
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(ZONE)
    except Exception as error:  # noqa: BLE001 - no tz database: say what to install
        fail(f"no time zone data for {ZONE} ({error}): install the tz database (Debian: tzdata)")


def day_start(date):
    """The first instant of `date` in ZONE (Berlin's DST changes are not at midnight)."""
    return dt.datetime.combine(date, dt.time.min, tzinfo=zone())


def day_of(instant):
    """The day `instant` falls on in ZONE."""
    return instant.astimezone(zone()).date()


def utc_now():
    return dt.datetime.now(dt.timezone.utc)


def utc_text(instant):
    """`instant` as RFC 3339 in UTC, whole seconds."""
    return instant.astimezone(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


async def poll(what, attempt, seconds=POLL_SECONDS):
    """Calls `attempt()` until it returns something truthy, for up to `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = await attempt()
        if value:
            return value
        if time.monotonic() > deadline:
            fail(f"{what} (waited {seconds:.0f} s)")
        await asyncio.sleep(0.5)


def http_client(token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else None
    # trust_env=False: no proxy from the environment for a loopback server.
    return httpx2.AsyncClient(
        headers=headers, timeout=httpx2.Timeout(30.0, read=120.0), trust_env=False
    )
