"""The code of ``examples/backup_notebooks.py``, one module a job; what a run does is that script's docstring.

    settings   the tunable numbers: page size, concurrency, retries, backoff, when a run gives up
    codes      what each error code the gateway answers means to a run (retried, fatal, final, ...)
    console    the stderr lines a run writes
    store      the backup directory: atomic writes, stale temporary files, ``index.json``
    client     the gateway's stable API over HTTP: ``Gateway`` (retries) and ``Pacer`` (429, Retry-After)
    sources    the collections backed up (Observable, PostHog) and where their notebooks land
    progress   the progress line of a source
    job        ``Backup``: a source's whole listing, then its notebooks by a pool of workers
    cli        the command line: ``parse_args``, ``run``, ``main`` and the exit status

Only the standard library and aiohttp are used, so copying the ``examples/`` folder moves the script.
"""
