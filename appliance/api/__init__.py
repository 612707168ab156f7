"""Network front-ends of the node: AO's HTTP API (and the operator gRPC API)."""
