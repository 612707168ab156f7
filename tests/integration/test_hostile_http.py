"""Hostile and careless input over a real ``serve`` on loopback: bounded cost, a 4xx JSON
``{"error": ...}`` that says what is wrong, never a 5xx, and nothing stored."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import struct
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import wasmtime
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from appliance.ao import items
from appliance.node.identity import NodeIdentity
from tests.integration.clients import client_identity, spawn
from tests.integration.server import Server, start_server
from tests.node.test_items_limits import tag_bomb
from tests.support.paths import REPO

HOSTILE_WAT = REPO / "tests" / "compute" / "hostile.wat"
FORMAT = "wasm32-unknown-emscripten4"
AO = [("Data-Protocol", "ao"), ("Variant", "ao.TN.1")]


@dataclass
class Live:
    server: Server
    client: NodeIdentity
    process: str

    @property
    def port(self) -> int:
        return int(self.server.url.rsplit(":", 1)[1])

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.getheader("Content-Type", ""), response.read()
        finally:
            conn.close()

    def raw(self, data: bytes) -> bytes:
        """Send raw bytes; everything the server answers until it closes (hang guard 60 s)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
            sock.sendall(data)
            out = b""
            while chunk := sock.recv(65536):
                out += chunk
            return out


def _module(client: NodeIdentity, data: bytes, fmt: str = FORMAT) -> items.Item:
    return items.sign(client, data=data, tags=[*AO, ("Type", "Module"), ("Module-Format", fmt)])


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _stored(live: Live, item_id: str) -> bool:
    query = json.dumps({"query": f'{{ transaction(id: "{item_id}") {{ id }} }}'}).encode()
    status, _, body = live.request("POST", "/graphql", query,
                                   {"Content-Type": "application/json"})
    assert status == 200, body
    return json.loads(body)["data"]["transaction"] is not None


def _json_error(status: int, content_type: str, body: bytes) -> str:
    assert 400 <= status < 500, (status, body[:300])
    assert content_type.startswith("application/json"), (content_type, body[:300])
    error = json.loads(body)["error"]
    assert isinstance(error, str) and error
    return error


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    base = tmp_path_factory.mktemp("hostile")
    server = start_server(base / "node")
    try:
        client = client_identity(base / "client")
        module = _module(client, bytes(wasmtime.wat2wasm(HOSTILE_WAT.read_text())))
        status, body = server.post("/", module.raw)
        assert status == 200, body
        yield Live(server, client, spawn(server, client, module.id, "hostile"))
    finally:
        server.stop()


def test_the_tag_bomb_is_refused_at_a_cost_proportional_to_its_size(live: Live) -> None:
    """16 MB item declaring 1 tag whose Avro block claims 8 M empty tags. 10f4232 decoded all
    8 M (5-55 s CPU, peak RSS +600 MB) before applying MAX_TAGS."""
    raw = tag_bomb()
    before = _peak_rss_kib(live.server.proc.pid)
    status, content_type, body = live.request("POST", "/", raw,
                                              {"Content-Type": "application/octet-stream"})
    assert "declares 1" in _json_error(status, content_type, body)
    grown_mib = (_peak_rss_kib(live.server.proc.pid) - before) / 1024
    assert grown_mib < 3 * len(raw) / 2**20 + 64, grown_mib


@pytest.mark.parametrize(("name", "data"), [
    ("url too long", b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("header too long", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"b" * 20000 + b"\r\n\r\n"),
    ("bad chunk size", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"zz\r\nabc\r\n0\r\n\r\n"),
    ("bad chunk mid-body", b"POST /dry-run?process-id=x HTTP/1.1\r\nHost: x\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\nzz\r\n\r\n"),
    ("content-length and chunked", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("bad method", b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("not http", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n"),
])
def test_errors_raised_by_the_http_layer_are_json(live: Live, name: str, data: bytes) -> None:
    answer = live.raw(data)
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    # the mid-body case answers once from the route, then once for the queued parse error
    body = body.split(b"HTTP/1.")[0]
    error = _json_error(int(status_line.split()[1]), headers["Content-Type"], body)
    assert error.startswith("bad HTTP request"), (name, error)


@pytest.mark.parametrize("query", [
    "from-nonce=123456789012345678901234567890", "to-nonce=9223372036854775808",
    "from=99999999999999999999", "limit=1e400", "from-nonce=-1", "from-nonce=%C2%B2"])
def test_out_of_range_integers_are_400(live: Live, query: str) -> None:
    error = _json_error(*live.request("GET", f"/{live.process}?{query}"))
    assert "integer from 0 to" in error


@pytest.mark.parametrize("cursor", [str(2**63), str(10**30), "-5", "x"])
def test_out_of_range_results_cursors_are_400(live: Live, cursor: str) -> None:
    token = urllib.parse.quote(base64.urlsafe_b64encode(cursor.encode()).decode().rstrip("="))
    error = _json_error(*live.request("GET", f"/results/{live.process}?from={token}"))
    assert "not a results cursor" in error


@pytest.mark.parametrize("bound", ["from=9223372036854775808", "to=-1", "from=" + "9" * 30,
                                   "from=" + base64.b64encode(b'{"timestamp":1e999}').decode()])
def test_out_of_range_cron_bounds_are_400(live: Live, bound: str) -> None:
    query = urllib.parse.quote(bound, safe="=")
    error = _json_error(*live.request("GET", f"/cron/{live.process}?{query}"))
    assert "cron cursor or a timestamp" in error


@pytest.mark.parametrize("modulus", [0, 3])
def test_an_rsa_owner_that_is_no_key_is_400(live: Live, modulus: int) -> None:
    raw = (struct.pack("<H", 1) + b"\1" * 512 + modulus.to_bytes(512, "big") + b"\0\0"
           + struct.pack("<QQ", 0, 0))
    error = _json_error(*live.request("POST", "/", raw))
    assert "not an RSA public key" in error


@pytest.mark.parametrize(("body", "content_type"), [
    (b"hello node", "text/plain"), (b'{"Tags": [{"name": "Action", "value": "Eval"}]}',
                                    "application/json")])
def test_text_or_json_posted_as_an_item_says_what_is_expected(
        live: Live, body: bytes, content_type: str) -> None:
    error = _json_error(*live.request("POST", "/", body, {"Content-Type": content_type}))
    assert "not an ANS-104 data item" in error and "application/octet-stream" in error
    assert "signature type 1, 2 or 3" in error


@pytest.mark.parametrize(("data", "fmt", "reason"), [
    (b"(module)", FORMAT, "not a wasm binary"),
    (b"hello, this is not wasm", FORMAT, "not a wasm binary"),
    (b"\0asm\1\0\0\0\1\5", FORMAT, "invalid wasm module: unexpected end-of-file"),
    (b"\0asm\1\0\0\0", "wasm32-unknown-emscripten9", "unknown module format"),
])
def test_a_module_that_is_not_valid_wasm_is_refused_at_upload(
        live: Live, data: bytes, fmt: str, reason: str) -> None:
    item = _module(live.client, data, fmt)
    status, content_type, body = live.request("POST", "/", item.raw)
    assert status == 422, body
    assert reason in _json_error(status, content_type, body)
    assert not _stored(live, item.id)


_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
_NUMBER = st.one_of(st.integers(-3, 3), st.integers(2**63 - 2, 2**63 + 2),
                    st.integers(-(2**100), 2**100)).map(str)
_VALUE = st.one_of(_NUMBER, _NUMBER.map(
    lambda n: base64.urlsafe_b64encode(n.encode()).decode().rstrip("=")), st.just("P"), _TEXT)
_PARAMS = ("process-id", "from", "to", "from-nonce", "to-nonce", "limit", "sort", "nonce",
           "replay")
_ROUTES = ("/", "/timestamp", "/processes/{id}", "/result/{id}", "/results/{id}",
           "/state/{id}", "/cron/{id}", "/attestation", "/result-item/{id}", "/proof/{id}",
           "/{id}", "/{id}/{id}", "/graphql", "/dry-run")


@pytest.mark.parametrize("route", _ROUTES)
@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ident=st.sampled_from(["P", "P", "x"]) | _TEXT,
       query=st.fixed_dictionaries({}, optional=dict.fromkeys(_PARAMS, _VALUE)),
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD"]),
       body=st.one_of(st.none(), st.binary(max_size=200),
                      st.sampled_from([b"{}", b'{"query": "{"}', b"[]", b"null"])))
def test_fuzzed_routes_and_parameters_never_answer_5xx(
        live: Live, route: str, ident: str, query: dict[str, str], method: str,
        body: bytes | None) -> None:
    """Real process id as ``P`` so queries reach the store; dry-runs only on unknown processes
    (a fuzzed message on a real process could legitimately run up to the wall-clock limit)."""
    if route == "/dry-run" and query.get("process-id") == "P":
        query["process-id"] = "nope"
    def real(text: str) -> str:
        return live.process if text == "P" else text
    path = route.replace("{id}", urllib.parse.quote(real(ident), safe=""))
    if query:
        path += "?" + urllib.parse.urlencode({k: real(v) for k, v in query.items()})
    status, content_type, answer = live.request(method, path, body)
    assert status < 500, (method, path, status, answer[:300])
    if status >= 400 and method != "HEAD":
        _json_error(status, content_type, answer)


def _graphql(live: Live, query: str, variables: object = None) -> tuple[int, dict[str, object]]:
    body = json.dumps({"query": query, "variables": variables}).encode()
    status, _, answer = live.request("POST", "/graphql", body, {"Content-Type": "application/json"})
    return status, json.loads(answer)


def test_graphql_work_is_bounded_before_it_is_done(live: Live) -> None:
    many = " ".join(f"a{i}: transactions(first: 100) {{ edges {{ cursor }} }}" for i in range(11))
    _, answer = _graphql(live, "{" + many + "}")
    assert "more than 10 transaction lookups" in json.dumps(answer["errors"])
    _, answer = _graphql(live, "query($ids: [ID!]) { transactions(ids: $ids) { edges { cursor "
                               "} } }", {"ids": ["x"] * 101})
    assert "more than 100 values" in json.dumps(answer["errors"])
    _, answer = _graphql(live, "{" + ' transaction(id: "x") { id }' * 500 + "}")
    assert "token" in json.dumps(answer["errors"]).lower()
    status, answer = _graphql(live, "{ transaction(id: \"x\") { id } }" + " " * 20_000)
    assert status == 400 and "longer than" in str(answer["error"])


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | _TEXT,
                     lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(_TEXT, inner, max_size=4), max_leaves=12)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(message=st.fixed_dictionaries({}, optional=dict.fromkeys(
    ("Tags", "Data", "Owner", "From", "Anchor", "Target", "Id"), _JSON)))
@example(message={"Tags": float("inf")})  # Python's JSON extension 'Infinity' was a 500
def test_fuzzed_dry_run_messages_never_answer_5xx(live: Live, message: dict[str, object]) -> None:
    """The hostile module dispatches on byte 11 of the message JSON, which a dry-run fixes to
    'r' ({"Id":"dry-run"...): every fuzzed message takes its plain path."""
    status, content_type, answer = live.request(
        "POST", f"/dry-run?process-id={live.process}", json.dumps(message).encode())
    assert status < 500, (message, status, answer[:300])
    if status >= 400:
        _json_error(status, content_type, answer)
