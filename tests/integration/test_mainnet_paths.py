"""AO-Core path parsing (docs/mainnet.md): the paths aoconnect 0.0.98 and aos 2.0.16 send."""

from __future__ import annotations

import pytest

from appliance.api.mainnet_paths import MAX_PAIRS, Route, parse
from appliance.errors import BadRequest

P = "JbUA2vAbCdEfGhIjKlMnOpQrStUvWxYz0123456_6xA"
M = "F47l31AbCdEfGhIjKlMnOpQrStUvWxYz012345-TiNg"


@pytest.mark.parametrize(("path", "route"), [
    ("/push", Route("push")),
    (f"/{P}~process@1.0/push", Route("push", P)),
    (f"/{P}~process@1.0/compute/results=1", Route("compute", P, 1)),
    (f"/{P}~process@1.0/compute=12", Route("compute", P, 12)),
    (f"/{P}/compute/results=3", Route("compute", P, 3)),
    (f"/{P}/compute=3", Route("compute", P, 3)),
    (f"/{P}~process@1.0/compute/results={M}", Route("compute", P, M)),
    (f"/{P}~process@1.0/now", Route("compute", P)),
    (f"/{P}/slot/current", Route("slot", P)),
    (f"/{P}~process@1.0/slot/current", Route("slot", P)),
    (f"/{P}~process@1.0/as=execution/compute&Action=Eval&Two%20Words=a%20b",
     Route("dry-run", P, tags=(("Action", "Eval"), ("Two Words", "a b")))),
    ("/ledger~node-process@1.0/now/balance/x", Route("payments")),
    ("/~p4@1.0/balance", Route("payments")),
    ("/~meta@1.0/info/operator", Route("other")),
    (f"/{P}~wasm-64@1.0/compute", Route("other")),
    (f"/{P}/push", Route("other", P)),
    (f"/{P}~process@1.0/schedule", Route("other", P)),
])
def test_captured_paths_parse(path: str, route: Route) -> None:
    assert parse(path) == route


@pytest.mark.parametrize("path", [
    "/short~process@1.0/push",
    f"/{P}~process@1.0/compute/results=",
    f"/{P}~process@1.0/compute/results=-1",
    f"/{P}~process@1.0/compute/results={2**63}",
    f"/{P}~process@1.0/compute/results=abc",
    f"/{P}~process@1.0/as=execution/compute&NoValue",
    f"/{P}~process@1.0/as=execution/compute&=v",
    f"/{P}~process@1.0/as=execution/compute&A=%FF",
    f"/{P}~process@1.0/as=execution/compute&A={'v' * 3073}",
    f"/{P}~process@1.0/as=execution/compute&{'n' * 1025}=v",
    f"/{P}~process@1.0/as=execution/compute" + "&A=b" * (MAX_PAIRS + 1),
])
def test_bad_paths_are_400(path: str) -> None:
    with pytest.raises(BadRequest):
        parse(path)


def test_the_pair_limit_is_inclusive() -> None:
    route = parse(f"/{P}~process@1.0/as=execution/compute" + "&A=b" * MAX_PAIRS)
    assert len(route.tags) == MAX_PAIRS
