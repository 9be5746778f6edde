"""Several server processes on one PostgreSQL database, joined by a Redis bus (docs/design/cluster.md)."""

from .bus import BusRefused
from .cluster import Cluster

__all__ = ["BusRefused", "Cluster"]
