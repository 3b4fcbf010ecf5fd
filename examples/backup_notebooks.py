#!/usr/bin/env python3
"""Back up every notebook (Observable public/shared/private, PostHog) through routegate's stable API.

    python examples/backup_notebooks.py --gateway URL --out DIR [--api-key KEY]
        [--observable-types public,shared,private] [--posthog-project ID]

This is the job routegate exists for: it only knows the gateway's stable URLs, so when
Observable or PostHog move a route, an edit to routes.yaml (and a reload) fixes it, even
in the middle of a run, because transient answers (5xx) are retried with backoff.

What lands in DIR::

    .lock                               held (flock) by the run writing into DIR
    index.json                          one entry per notebook: updated_at, version, file, saved_at, etag
    observable/<id>.json                the full document  (GET /v1/observable/notebooks/{id})
    posthog/<project>/<short_id>.json   with its content   (GET /v1/posthog/projects/{p}/notebooks/{id})

* Incremental: a notebook whose listed ``updated_at`` (and, for Observable, ``version``)
  equals its index entry, and whose file exists, is not fetched again; one whose listing
  changed is asked for with ``If-None-Match`` and the ETag stored, so an unchanged document
  costs a 304 and no body.
* Resumable: every file is written to a temporary name and renamed into place, and the
  index is rewritten the same way as the run goes, so a run killed at any point leaves a
  consistent directory; the next run fetches only what is missing or changed.
* Careful with the gateway: a 429, or a 503 with ``Retry-After``, is the gateway pacing the run:
  every worker waits as told (one shared pause), without spending the retries, which are for
  failures. A code no retry can heal (the gateway's upstream credentials refused or missing)
  stops the run at once; a route whose mapping broke (``upstream_route_gone``, ``shape_drift``
  ...) is retried long enough for an operator's reload, and stops the run once it has failed
  ``BROKEN_AFTER`` notebooks. ``upstream_forbidden`` (the upstream refused the gateway's
  credential this call: a missing permission or scope) is never retried: a listing refused so
  stops the run, notebooks refused so count towards ``BROKEN_AFTER``.
* Listing first: a source's whole listing is read (a handful of requests) before any
  notebook is downloaded, so the window in which an edit can make the gateway answer 409
  ``collection_changed`` is only as long as the listing itself, not the whole run. A listing
  answered 409 is read again from its first page; only a listing read to its end can mark
  notebooks ``gone_since``, and only those whose own GET then answers 404 (a 200 keeps one).
* One run at a time per DIR: a second run into it exits 2 at once (an ``flock`` on ``DIR/.lock``).
* Exit status: 0 everything listed was backed up; 1 some notebook or listing failed after
  retries, or the run was stopped (everything else is saved; run again); 2 usage error;
  130 interrupted.

Only the standard library and aiohttp are used. The code lives in ``notebook_backup/`` next to this
script, one module a job; this file is the entry point and the names the tests use.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python examples/backup_notebooks.py` puts this folder on sys.path itself; a loader that runs the file
# by its path (importlib's spec_from_file_location, as the tests do) does not: the package is found either way
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from notebook_backup.cli import main, parse_args, run  # noqa: E402
from notebook_backup.settings import BROKEN_AFTER, CONCURRENCY, LISTING_RESTARTS, PACED_LIMIT  # noqa: E402

__all__ = ["BROKEN_AFTER", "CONCURRENCY", "LISTING_RESTARTS", "PACED_LIMIT", "main", "parse_args", "run"]

if __name__ == "__main__":
    sys.exit(main())
