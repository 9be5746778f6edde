"""Benchmark harness: crdt-server vs the Node reference y-websocket server. Run `python -m bench`."""
