"""``GET /status``: one self-contained HTML page telling the operator what works right now.

Every stable route with the upstream target answering it today, up/down with the
reason and since when (from live traffic and probes), whether a fallback target is
in use, and when each upstream credential expires.  No external assets: the CSS and
the few lines of script (relative times) are inline and pinned by hash in the
Content-Security-Policy, and every value is HTML-escaped, so the page works offline
and nothing an upstream says can inject markup.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape

from gateway.config import Config, ConfigError, Route
from gateway.expiry import CredentialExpiry
from gateway.health import RouteHealth
from gateway.probes import ProbeResult

#: a credential expiring sooner than this is flagged (the alert warns at the same horizon)
EXPIRY_WARNING = 2 * 86400
#: problems of a refused reload shown on the page; the rest are counted
REFUSED_SHOWN = 20
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5rem;color:#1d232a;background:#fafbfc}
h1{font-size:1.35rem;margin:0 0 .2rem}h2{font-size:1.05rem;margin:1.6rem 0 .5rem}
.meta{color:#5b6570;margin:0 0 1rem}table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #e3e7eb;vertical-align:top}
th{background:#f0f2f4;font-weight:600}code{font-size:.9em;overflow-wrap:break-word}
td.reason{min-width:18rem;max-width:34rem}.small{font-size:.85em}
.state{font-weight:700;border-radius:3px;padding:.05rem .4rem;color:#fff;white-space:nowrap}
.up{background:#1f883d}.down{background:#cf222e}.unknown{background:#8c959f}.warn{background:#bf8700}
.summary span{margin-right:1rem}.reason{color:#cf222e}.muted{color:#5b6570}.zero{background:#d0d7de;color:#1d232a}
td.route code{white-space:nowrap}.refused{border:2px solid #cf222e;background:#fff;padding:.5rem .8rem}
.refused pre{margin:.3rem 0 0;white-space:pre-wrap}
""".strip()

_JS = """
for (const t of document.querySelectorAll("time[data-rel]")) {
  const s = Math.round((Date.parse(t.getAttribute("datetime")) - Date.now()) / 1000);
  const a = Math.abs(s);
  const n = a < 90 ? a + " s" : a < 5400 ? Math.round(a / 60) + " min" : a < 129600 ? Math.round(a / 3600) + " h"
    : Math.round(a / 86400) + " d";
  t.textContent = a < 2 ? "just now" : s < 0 ? n + " ago" : "in " + n;
  t.title = t.getAttribute("datetime");
}
""".strip()


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


#: only the inline style and script above may run; nothing is loaded from anywhere
CSP = f"default-src 'none'; style-src {_sha256(_CSS)}; script-src {_sha256(_JS)}; base-uri 'none'; form-action 'none'"
HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _when(ts: float | None) -> str:
    if ts is None:
        return '<span class="muted">never</span>'
    iso = _iso(ts)
    return f'<time datetime="{iso}" data-rel>{iso}</time>'


def _breakable(path: str) -> str:
    """Escaped, with line-break chances after each ``/``, ``?`` and ``&`` (never inside a name)."""
    return escape(path).replace("/", "/<wbr>").replace("?", "?<wbr>").replace("&amp;", "&amp;<wbr>")


def _route_row(route: Route, health: RouteHealth, probe: ProbeResult | None) -> tuple[str, str]:
    state = health.get(route.name)
    name = "unknown" if state.up is None else ("up" if state.up else "down")
    index = min(state.target, len(route.targets) - 1)
    target = _breakable(route.targets[index].label)
    if index > 0:
        primary = _breakable(route.targets[0].label)
        fallback = (
            f'<span class="state warn">fallback #{index}</span> primary <code>{primary}</code>'
            " handed over (gone, or what its fallback_on names)"
        )
    else:
        fallback = '<span class="muted">no</span>' if len(route.targets) > 1 else '<span class="muted">-</span>'
    if state.up is False:
        reason = f'<span class="reason"><code>{escape(state.code)}</code> {escape(state.reason)}</span>'
    elif state.up is None:
        reason = f'<span class="muted">{escape(_unknown_because(route, probe))}</span>'
    else:
        reason = ""
    evidence = f"{escape(state.source)} {_when(state.checked)}" if state.checked is not None else ""
    if route.probe is None:
        probe_cell = (
            '<span class="muted">never probed (write route)</span>'
            if route.method in _WRITES
            else ('<span class="muted">no probe</span>')
        )
    elif probe is None:
        probe_cell = '<span class="muted">not run yet</span>'
    else:
        probe_cell = f"{escape(probe.outcome)} {_when(probe.at)}"
        if probe.outcome == "skipped":
            probe_cell += f' <span class="muted">{escape(probe.message)}</span>'
    row = (
        f'<tr data-route="{escape(route.name)}" data-state="{name}">'
        f'<td class="route"><code>{escape(route.name)}</code><br>'
        f'<code class="small muted">{_breakable(route.stable)}</code></td>'
        f"<td>{escape(route.upstream)}: <code>{target}</code></td>"
        f'<td><span class="state {name}">{name.upper()}</span></td>'
        f"<td>{_when(state.since) if state.since is not None else ''}</td>"
        f'<td class="reason">{reason}</td>'
        f"<td>{fallback}</td>"
        f'<td class="small">{evidence}</td>'
        f'<td class="small">{probe_cell}</td>'
        "</tr>"
    )
    return name, row


def _unknown_because(route: Route, probe: ProbeResult | None) -> str:
    """Why a route's state is not known: one wording, the probe column's ("skipped", "not run yet")."""
    if route.method in _WRITES:
        return "a write route: never probed (a probe must not change data); known once a write goes through"
    if route.probe is None:
        return "no probe configured; known once traffic goes through"
    if probe is not None and probe.outcome == "skipped":
        return f"probe skipped: {probe.message}"
    return "probe not run yet, and no traffic"


def _refused(refused: tuple[float, ConfigError] | None) -> str:
    """The last reload refused since the config now served was loaded: what to fix, file:line first."""
    if refused is None:
        return ""
    when, error = refused
    problems = [str(p) for p in error.problems]
    more = len(problems) - REFUSED_SHOWN
    lines = "\n".join(problems[:REFUSED_SHOWN]) + (f"\n... and {more} more" if more > 0 else "")
    return (
        f'<div class="refused" id="refused"><span class="state down">reload refused</span> {_when(when)}: '
        "the routes file has problems, so the config below keeps serving. Fix them and save again."
        f"<pre>{escape(lines)}</pre></div>"
    )


def _credential_row(c: CredentialExpiry, now: float) -> str:
    if c.expires_at is None:
        state, label = "unknown", "unknown (not set or not decodable)"
    elif c.expires_at <= now:
        state, label = "down", "expired"
    elif c.expires_at - now < EXPIRY_WARNING:
        state, label = "warn", "renew soon"
    else:
        state, label = "up", "valid"
    expires = _when(c.expires_at) if c.expires_at is not None else ""
    return (
        f'<tr data-upstream="{escape(c.upstream)}" data-credential-state="{state}">'
        f"<td>{escape(c.upstream)}</td><td><code>{escape(c.credential)}</code></td>"
        f'<td>{expires}</td><td><span class="state {state}">{escape(label)}</span></td></tr>'
    )


def _shared(shared: tuple[str, str] | None) -> str:
    if shared is None:
        return ""
    state, text = shared
    css = {"shared": "up", "fallback": "down"}.get(state, "unknown")
    return (
        f'<p class="meta" id="shared" data-shared-state="{escape(state)}">'
        f'<span class="state {css}">{escape(state)}</span> {escape(text)}</p>'
    )


def _badge(state: str, count: int) -> str:
    """A count's badge, coloured only when there is something to count (no red "0 down")."""
    return f'<span class="state {state if count else "zero"}">{count} {state}</span>'


def _probed_by(probed_by: tuple[str | None, str] | None) -> str:
    ran, me = probed_by or (None, "")
    if ran is None:
        return ""
    who = "this instance" if ran == me else f"another instance; this is <code>{escape(me)}</code>"
    return f' <span id="probed-by">by instance <code>{escape(ran)}</code> ({who})</span>'


def render_page(
    config: Config,
    health: RouteHealth,
    probes: Mapping[str, ProbeResult],
    credentials: Sequence[CredentialExpiry],
    *,
    prober_running: bool,
    last_round: float | None,
    refused: tuple[float, ConfigError] | None = None,
    now: float | None = None,
    probed_by: tuple[str | None, str] | None = None,
    shared: tuple[str, str] | None = None,
) -> str:
    """``probed_by``: (who ran the last round, this instance): with a probe lease, another instance may have.
    ``shared``: (state, text) of the budgets and limits shared through Redis."""
    now = time.time() if now is None else now
    counts = {"up": 0, "down": 0, "unknown": 0}
    rows = []
    for route in config.routes:
        state, row = _route_row(route, health, probes.get(route.name))
        counts[state] += 1
        rows.append(row)
    creds = "".join(_credential_row(c, now) for c in credentials) or (
        '<tr><td colspan="4" class="muted">no upstream declares how its credential expires</td></tr>'
    )
    if prober_running and config.probes.enabled:
        prober = f"background probes every {config.probes.interval:g}s ± {config.probes.jitter:g}s"
    else:
        prober = "background probes are not running (run <code>gateway probe</code> from cron)"
    if counts["down"]:
        title = f"routegate: {counts['down']} route(s) down"
    elif counts["unknown"]:
        title = f"routegate: {counts['up']} route(s) up, {counts['unknown']} not known yet"
    else:
        title = "routegate: all routes up"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="refresh" content="15">
<title>{escape(title)}</title><style>{_CSS}</style></head>
<body>
<h1>routegate status</h1>
<p class="meta">config <code>{escape(config.path)}</code> (digest <code>{escape(config.digest)}</code>),
rendered {_when(now)}; {prober}, last round {_when(last_round)}{_probed_by(probed_by)}.</p>
{_shared(shared)}
{_refused(refused)}
<p class="summary" id="summary">{_badge("up", counts["up"])}
{_badge("down", counts["down"])}
{_badge("unknown", counts["unknown"])}</p>
<h2>Routes</h2>
<table id="routes"><thead><tr><th>Route / stable</th><th>Upstream target now</th><th>State</th><th>Since</th>
<th>Reason</th><th>Fallback in use</th><th>Last evidence</th><th>Last probe</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
<h2>Upstream credentials</h2>
<table id="credentials"><thead><tr><th>Upstream</th><th>Credential</th><th>Expires</th><th>State</th></tr></thead>
<tbody>{creds}</tbody></table>
<script>{_JS}</script>
</body></html>
"""
