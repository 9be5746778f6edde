"""crdt-server."""
