"""The tunable numbers of a run, in one place: pacing, retries, concurrency, when to give up."""

from __future__ import annotations

PAGE = 50  # the gateway's default page
CONCURRENCY = 4  # notebooks fetched at once
MAX_RETRIES = 100
BACKOFF_BASE = 0.5  # seconds; doubles per attempt
BACKOFF_CAP = 30.0
PAUSE_CAP = 60.0  # the longest single pause a Retry-After can impose
PACED_LIMIT = 300.0  # seconds of being told to wait with no request getting through: the run stops
LISTING_RESTARTS = 3  # a listing that changed while being read is read again from its first page
BROKEN_AFTER = 3  # notebooks of one route failed by a broken mapping or a refusal: the run stops
INDEX_SAVE_EVERY = 0.25  # seconds between index rewrites while notebooks are being saved
