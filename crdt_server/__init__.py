"""crdt-server: a Yjs-compatible server for live collaborative coding interviews."""

__version__ = "0.1.0"
