"""The node: scheduler, durable store, process actors, messenger and the signed result chain."""
