"""The operator gRPC API (service ``ao_appliance.v1.Operator``): server, metrics, stubs."""
