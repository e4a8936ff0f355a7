"""The HTTP layer of taskmesh's `/mcp` endpoint, checked without the SDK (part of the MCP
end-to-end test, tools/mcp_test.py): the `Host` and `Origin` checks come before the token
(403 with or without one), a missing or bad token is 401 with the RFC 9728 challenge, whose
metadata document names the endpoint the request came by, and GET is 405."""

import re

from mcp.types.version import LATEST_HANDSHAKE_VERSION

from mcp_test_support import check, fail, http_client, ok, short

FOREIGN_HOST = "evil.example"
FOREIGN_ORIGIN = "http://evil.example"
METADATA_PATH = "/.well-known/oauth-protected-resource/mcp"

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": LATEST_HANDSHAKE_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "taskmesh-mcp-test", "version": "1.0.0"},
    },
}
BASE_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def cache_directives(headers):
    return {part.strip().lower() for part in headers.get("cache-control", "").split(",") if part.strip()}


async def http_checks(url, alice):
    """The HTTP layer of /mcp and of its protected-resource metadata."""
    endpoint = f"{url}/mcp"
    expected_metadata_url = f"{url}{METADATA_PATH}"
    bearer = {"Authorization": f"Bearer {alice}"}

    async def post(headers):
        async with http_client() as client:
            async with client.stream(
                "POST", endpoint, json=INITIALIZE, headers={**BASE_HEADERS, **headers}
            ) as response:
                await response.aread()
                return response.status_code, response.headers, response.text

    # 401 and its challenge
    status, headers, _ = await post({})
    check(status == 401, f"POST /mcp without a token: expected 401, got {status}")
    challenge = headers.get("www-authenticate", "")
    check(challenge.startswith("Bearer"), f"POST /mcp without a token: WWW-Authenticate is {challenge!r}, not a Bearer challenge")
    found = re.search(r'resource_metadata="([^"]+)"', challenge)
    check(found, f"POST /mcp without a token: WWW-Authenticate has no resource_metadata=\"...\": {challenge!r}")
    metadata_url = found.group(1)
    check(metadata_url == expected_metadata_url,
          f"POST /mcp without a token: resource_metadata is {metadata_url!r}, expected {expected_metadata_url!r}")
    check("error=" not in challenge, f"POST /mcp without a token: the challenge names an error: {challenge!r}")
    ok(f"POST /mcp without a token: 401, WWW-Authenticate: {challenge}")

    # The metadata document
    async with http_client() as client:
        response = await client.get(metadata_url)
    check(response.status_code == 200, f"GET {metadata_url}: expected 200, got {response.status_code}")
    directives = cache_directives(response.headers)
    check("no-store" in directives,
          f"GET {metadata_url}: Cache-Control is {response.headers.get('cache-control')!r}, expected no-store")
    try:
        document = response.json()
    except ValueError:
        fail(f"GET {metadata_url}: not JSON: {short(response.text)}")
    check(isinstance(document, dict), f"GET {metadata_url}: not a JSON object: {short(document)}")
    resource = document.get("resource")
    check(resource == endpoint, f"protected-resource metadata: resource is {resource!r}, expected {endpoint!r}")
    servers = document.get("authorization_servers")
    check(isinstance(servers, list), f"protected-resource metadata: authorization_servers is not a list: {servers!r}")
    ok(f"GET {metadata_url}: 200, Cache-Control: {response.headers.get('cache-control')}, resource {resource}, authorization_servers {servers}")

    async with http_client() as client:
        response = await client.get(metadata_url, headers={"Host": FOREIGN_HOST})
    check(response.status_code == 403,
          f"GET {metadata_url} with Host: {FOREIGN_HOST}: expected 403, got {response.status_code}: {short(response.text, 300)}")
    check(FOREIGN_HOST not in response.text,
          f"GET {metadata_url} with Host: {FOREIGN_HOST}: the 403 names the foreign host: {short(response.text, 300)}")
    ok(f"GET {metadata_url} with Host: {FOREIGN_HOST}: 403")

    # A garbage token
    status, headers, _ = await post({"Authorization": "Bearer not-a-jwt"})
    check(status == 401, f"POST /mcp with a garbage token: expected 401, got {status}")
    challenge = headers.get("www-authenticate", "")
    check(challenge.startswith("Bearer"), f"POST /mcp with a garbage token: WWW-Authenticate is {challenge!r}")
    check('error="invalid_token"' in challenge, f"POST /mcp with a garbage token: no error=\"invalid_token\" in {challenge!r}")
    check(f'resource_metadata="{expected_metadata_url}"' in challenge,
          f"POST /mcp with a garbage token: the challenge lacks resource_metadata=\"{expected_metadata_url}\": {challenge!r}")
    ok("POST /mcp with a garbage token: 401, error=\"invalid_token\"")

    # A foreign Origin or Host: 403 before the token is looked at, with or without one. The
    # same requests without the foreign header get 401 and 200 (above and below), so the
    # header is what is refused.
    for what, header in (("Origin", {"Origin": FOREIGN_ORIGIN}), ("Host", {"Host": FOREIGN_HOST})):
        value = header[what]
        for token, extra in (("no token", {}), ("a valid token", bearer)):
            status, headers, text = await post({**header, **extra})
            check(status == 403, f"POST /mcp with {what}: {value} and {token}: expected 403, got {status}: {short(text, 300)}")
            check("www-authenticate" not in headers,
                  f"POST /mcp with {what}: {value} and {token}: a 403 with a challenge: {headers.get('www-authenticate')!r}")
            check(what.lower() in text.lower(),
                  f"POST /mcp with {what}: {value} and {token}: the 403 does not say the {what.lower()} is refused: {short(text, 300)}")
            ok(f"POST /mcp with {what}: {value} and {token}: 403 ({text.strip()})")

    status, _, text = await post(bearer)
    check(status == 200, f"POST /mcp initialize with a valid token: expected 200, got {status}: {short(text, 300)}")
    ok("POST /mcp initialize with a valid token: 200")
    own_origin = url  # http://127.0.0.1:<port>: a loopback origin, allowed by default
    status, _, text = await post({**bearer, "Origin": own_origin})
    check(status == 200, f"POST /mcp with a valid token and Origin: {own_origin}: expected 200, got {status}: {short(text, 300)}")
    ok(f"POST /mcp with a valid token and Origin: {own_origin}: 200")

    async with http_client(alice) as client:
        async with client.stream("GET", endpoint, headers={"Accept": "text/event-stream"}) as response:
            status = response.status_code
    check(status == 405, f"GET /mcp with a valid token: expected 405, got {status}")
    ok("GET /mcp: 405")
