"""Answers for AO-Core (mainnet) routes, which this node does not speak yet (docs/mainnet.md).

aos and aoconnect default to mainnet mode and reach for HyperBEAM device paths first
(``/~meta@1.0/info/address``, ``POST /push``, ``/{process}~process@1.0/...``,
``/{process}/slot/current``). ``/~meta@1.0/info/address`` answers the node's address as text,
as HyperBEAM does; every other such path answers a JSON error saying which API the node speaks
and how to start aos for it.
"""

from __future__ import annotations

import logging

from aiohttp import web

log = logging.getLogger("appliance.http")
STATUS = 404
ADDRESS_PATH = "/~meta@1.0/info/address"
PATHS = ("/push", r"/{head:[^/]*~[^/]*}{tail:(/.*)?}", "/{process}/slot/{tail:.*}",
         "/{process}/compute{tail:.*}")


def explanation(node_url: str, address: str) -> str:
    """What a mainnet client is told (the ``error`` of the JSON answer)."""
    return (f"this node speaks AO's legacy MU/SU/CU HTTP API, not AO-Core (mainnet) routes; "
            f"start aos in legacy mode: aos --legacy --gateway-url {node_url} "
            f"--cu-url {node_url} --mu-url {node_url} --scheduler {address} "
            f"--tag-name Authority --tag-value {address} (and ARWEAVE_GRAPHQL={node_url}/graphql); "
            f"aoconnect: connect({{MODE: 'legacy', MU_URL, CU_URL, GATEWAY_URL}}); "
            f"see docs/aos.md")


def add_refusals(app: web.Application, address: str) -> None:
    """Serve ``/~meta@1.0/info/address`` and route every other AO-Core path to a JSON error;
    call before the catch-all ``/{id}`` route."""
    warned: set[str] = set()

    async def refuse(request: web.Request) -> web.Response:
        text = explanation(f"{request.scheme}://{request.host}", address)
        route = request.match_info.route.resource
        template = route.canonical if route is not None else request.path
        if template not in warned:  # once per route: a mainnet client retries in loops
            warned.add(template)
            log.warning("mainnet (AO-Core) request %s %s refused: %s", request.method,
                        request.path, text)
        return web.json_response({"error": text}, status=STATUS)

    async def address_text(_request: web.Request) -> web.Response:
        return web.Response(text=address)

    app.router.add_get(ADDRESS_PATH, address_text)
    for path in PATHS:
        app.router.add_route("*", path, refuse)
