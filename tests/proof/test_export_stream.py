"""``GET /proof`` is streamed a page of slots at a time: the pieces are bounded by the page size
whatever the history's length, they join into exactly :meth:`Proof.encode`'s bytes, and the
route answers them with chunked transfer."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from appliance.node.node import Node
from appliance.proof import export
from appliance.proof.bundle import Proof
from attestation.providers import EmulatedProvider
from tests.integration.clients import client_identity, message, spawn, upload_module
from tests.integration.inproc import serve_in_thread
from tests.integration.server import Server

SLOTS = 7


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Node, str, str]]:
    base = tmp_path_factory.mktemp("stream")
    with serve_in_thread(base / "node", EmulatedProvider(base / "tee")) as (srv, node):
        client = client_identity(base / "client")
        process = spawn(srv, client, upload_module(srv, client), "streamed")
        last = ""
        for n in range(1, SLOTS):
            item = message(client, process, f"x = {n}", n)
            assert srv.post("/", item.raw)[0] == 202
            last = item.id
        srv.get(f"/result/{last}?process-id={process}")
        yield srv, node, process, last


@pytest.mark.parametrize("replay", [False, True])
def test_pieces_join_into_the_bundle_and_stay_page_sized(
        history: tuple[Server, Node, str, str], monkeypatch: pytest.MonkeyPatch,
        replay: bool) -> None:
    _, node, process, last = history
    whole = b"".join(export.proof_chunks(node, process, last, replay=replay))
    proof = Proof.decode(whole)
    assert whole == proof.encode()
    assert len(proof.assignments) == len(proof.results) == SLOTS
    assert len(proof.messages) == (SLOTS if replay else 0)
    assert (proof.module is not None) == replay
    monkeypatch.setattr(export, "PAGE", 2)
    pieces = list(export.proof_chunks(node, process, last, replay=replay))
    assert b"".join(pieces) == whole
    biggest_item = max(len(b) for b in (*proof.assignments, *proof.results, *proof.messages,
                                        *proof.attestations))
    module = len(proof.module or b"")
    assert max(len(p) for p in pieces) <= 2 * 2 * biggest_item + module * 4 // 3 + 1024


def test_the_route_streams_chunked(history: tuple[Server, Node, str, str]) -> None:
    srv, node, process, last = history
    with urllib.request.urlopen(f"{srv.url}/proof/{last}?process-id={process}&replay=1",
                                timeout=120) as response:
        assert response.headers["Transfer-Encoding"] == "chunked"
        body = response.read()
    assert body == export.build_proof(node, process, last, replay=True).encode()


def test_an_unknown_message_is_a_json_404(history: tuple[Server, Node, str, str]) -> None:
    srv, _, process, _ = history
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{srv.url}/proof/nope?process-id={process}", timeout=60)
    assert refused.value.code == 404 and b'"error"' in refused.value.read()
