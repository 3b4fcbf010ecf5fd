"""nginx, twice: the fast static upstream, and the reference proxy a user would pick instead.

Both run as non-daemons with their own prefix under the bench's temp dir, on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from bench.procs import Procs, free_port, wait_http

UPSTREAM_PATH = "/api/notebook.json"


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        raise RuntimeError("nginx is not installed; run bench/install-deps.sh")
    return found


def page_json() -> bytes:
    """A realistic ~2 KB JSON page: a PostHog notebook detail with ProseMirror content."""
    paragraphs = [
        "Weekly retention by signup cohort, split by plan and acquisition channel.",
        "The onboarding funnel lost 4% at the workspace invite step after the redesign.",
        "Feature flag new-editor is at 50% rollout; error rates unchanged so far.",
        "Action items: instrument the export button, re-run the cohort query on Monday.",
    ]
    content = {
        "type": "doc",
        "content": [
            {
                "type": "heading",
                "attrs": {"level": 1},
                "content": [{"type": "text", "text": "Product review, week 47"}],
            },
            *({"type": "paragraph", "content": [{"type": "text", "text": p}]} for p in paragraphs),
        ],
    }
    user = {
        "id": 1,
        "uuid": "0188a0f5-52c3-0000-4a1f-8e0d5c7b2a11",
        "distinct_id": "u1",
        "first_name": "Ada",
        "email": "ada@example.com",
        "is_email_verified": True,
    }
    doc = {
        "id": "0188a0f5-9d1e-7c2b-8a4f-3e6d2b1c0a99",
        "short_id": "aB3dE5fG",
        "title": "Product review, week 47",
        "content": content,
        "text_content": "\n".join(paragraphs),
        "version": 17,
        "deleted": False,
        "created_at": "2024-11-18T09:12:44.120391Z",
        "created_by": user,
        "last_modified_at": "2024-11-22T16:40:03.551208Z",
        "last_modified_by": user,
        "user_access_level": "editor",
    }
    body = json.dumps(doc, indent=1).encode()
    # pad the text to land on ~2 KB exactly, whatever the dict above grows to
    pad = max(0, 2048 - len(body))
    doc["text_content"] = str(doc["text_content"]) + " " * pad
    return json.dumps(doc, indent=1).encode()


def _common(prefix: Path) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"{user}pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\nevents {{ worker_connections 4096; }}\n"


def _temp_paths(prefix: Path) -> str:
    return "".join(
        f"    {kind}_temp_path {prefix}/{kind}_temp;\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )


def upstream_conf(prefix: Path, port: int, docroot: Path) -> str:
    """The static upstream: one worker, no access log, keep-alive forever."""
    return _common(prefix).replace("events", "worker_processes 1;\nevents", 1) + (
        "http {\n"
        "    access_log off;\n"
        "    keepalive_requests 1000000;\n"
        "    keepalive_timeout 120s;\n"
        f"{_temp_paths(prefix)}"
        f"    server {{\n        listen 127.0.0.1:{port};\n"
        f"        root {docroot};\n"
        "        location /api/ { default_type application/json; }\n"
        "    }\n}\n"
    )


def start_upstream(procs: Procs, workdir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """The static upstream serving ``page_json()`` at ``UPSTREAM_PATH``, ready: (base URL, process)."""
    docroot = workdir / "docroot"
    (docroot / "api").mkdir(parents=True, exist_ok=True)
    (docroot / "api" / "notebook.json").write_bytes(page_json())
    port = free_port()
    prefix = workdir / "nginx-upstream"
    proc = procs.start("upstream", argv(prefix, upstream_conf(prefix, port, docroot)))
    base = f"http://127.0.0.1:{port}"
    wait_http(base + UPSTREAM_PATH, proc=proc)
    return base, proc


def proxy_conf(prefix: Path, port: int, upstream_port: int, workers: int) -> str:
    """The reference proxy: ``proxy_pass`` over keep-alive, and a ``proxy_cache`` location.

    Like the gateway it logs every request (unbuffered) so both sides pay for a log line.
    """
    return _common(prefix).replace("events", f"worker_processes {workers};\nevents", 1) + (
        "http {\n"
        f"    access_log {prefix}/access.log;\n"
        "    keepalive_requests 1000000;\n"
        "    keepalive_timeout 120s;\n"
        f"{_temp_paths(prefix)}"
        f"    proxy_cache_path {prefix}/cache levels=1:2 keys_zone=bench:10m max_size=100m;\n"
        f"    upstream up {{ server 127.0.0.1:{upstream_port}; keepalive 128; keepalive_requests 1000000; }}\n"
        f"    server {{\n        listen 127.0.0.1:{port} reuseport;\n"
        "        proxy_http_version 1.1;\n"
        '        proxy_set_header Connection "";\n'
        "        location /pass/ { proxy_pass http://up/api/; }\n"
        "        location /cache/ {\n"
        "            proxy_pass http://up/api/;\n"
        "            proxy_cache bench;\n"
        "            proxy_cache_valid 200 10m;\n"
        "            add_header X-Cache $upstream_cache_status;\n"
        "        }\n"
        "    }\n}\n"
    )


def argv(prefix: Path, conf: str) -> list[str]:
    """Write ``conf`` under ``prefix`` and return the command that runs it in the foreground."""
    prefix.mkdir(parents=True, exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(conf)
    return [nginx_binary(), "-p", str(prefix), "-c", str(path), "-g", "daemon off;"]
