"""The response cache: per-route TTLs, stale-if-error, coalesced fills, write invalidation.

``policy`` decides keys, freshness and invalidation markers; ``store`` holds entries
(in-process, byte-bounded); ``redis_store`` shares them between replicas; ``core``
puts it all in the request flow.
"""

from gateway.cache.backends import CacheBackends
from gateway.cache.core import Notes, ResponseCache, forbid_store
from gateway.cache.store import CacheUnavailable

__all__ = ["CacheBackends", "CacheUnavailable", "Notes", "ResponseCache", "forbid_store"]
