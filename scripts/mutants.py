"""``make mutants``: mutation testing (mutmut) of the modules whose mistakes users see first.

Each group mutates one area and runs only the focused tests that cover it, in a throwaway copy
of the work tree (mutmut reads its settings from pyproject.toml, so each copy gets its own
``[tool.mutmut]``).  Prints killed/survived per group and the survivors' names; ``mutmut show
NAME`` inside the printed copy shows a survivor's diff.

    python scripts/mutants.py                 # every group
    python scripts/mutants.py cache-policy    # one group
    python scripts/mutants.py named           # only the survivors issue 15 named: each test must fail
    python scripts/mutants.py pipeline --recheck  # the kept run's survivors against today's tests
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: group -> (the files mutated, the focused tests each mutant runs)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "pagination": (
        ["gateway/pagination/*"],
        ["tests/test_mutants_named.py", "tests/test_mutants_pagination.py", "tests/test_pagination_styles.py",
         "tests/test_pagination_ties.py", "tests/test_pagination_shifts.py",
         "tests/test_cursor.py", "tests/test_target_pagination.py",
         "tests/test_observable_api.py", "tests/test_posthog_api.py", "tests/test_ndjson.py"],
    ),
    "mapping": (
        ["gateway/mapping.py"],
        ["tests/test_mutants_named.py", "tests/test_mutants_mapping.py", "tests/test_gateway.py",
         "tests/test_observable_api.py",
         "tests/test_posthog_api.py", "tests/test_hostile.py"],
    ),
    "cache-policy": (
        ["gateway/cache/policy.py"],
        ["tests/test_mutants_named.py", "tests/test_mutants_cache_policy.py", "tests/test_cache.py"],
    ),
    # the per-route pipeline's composition and the call-level stack (issue 15 point 8: the stages that
    # replace the proxy's call path)
    "calls": (
        ["gateway/pipeline/calls.py", "gateway/pipeline/stages.py", "gateway/pipeline/core.py",
         "gateway/pipeline/__init__.py", "gateway/proxy/__init__.py", "gateway/proxy/targets.py",
         "gateway/proxy/answer.py"],
        ["tests/test_mutants_named.py", "tests/test_mutants_calls.py", "tests/test_call_stages.py",
         "tests/test_pipeline.py", "tests/test_breakage.py", "tests/test_gateway.py",
         "tests/test_target_pagination.py", "tests/test_hot_path_pass.py"],
    ),
    # the pipeline's stages and the proxy's response side (the composition and the call-level stack
    # are the ``calls`` group)
    "pipeline": (
        ["gateway/pipeline/admission.py", "gateway/pipeline/account.py", "gateway/pipeline/body.py",
         "gateway/pipeline/conventions.py", "gateway/pipeline/collection.py",
         "gateway/proxy/status.py", "gateway/proxy/respond.py"],
        ["tests/test_mutants_pipeline.py", "tests/test_http_conventions.py", "tests/test_pipeline.py",
         "tests/test_hostile.py", "tests/test_gateway.py", "tests/test_breakage.py", "tests/test_access.py",
         "tests/test_limits.py", "tests/test_cursor.py", "tests/test_ndjson.py", "tests/test_target_pagination.py",
         "tests/test_session_check.py", "tests/test_observable_api.py", "tests/test_posthog_api.py",
         "tests/test_edge_qa.py", "tests/test_pagination_shifts.py"],
    ),
}


#: the tests of behaviour added after a group's mutant tests were written, run on recheck too (their
#: files were written for QA defects, not for mutants, so they are not named test_mutants_*)
RECHECK_ALSO: dict[str, list[str]] = {
    "pipeline": ["tests/test_edge_qa.py", "tests/test_walk_qa.py", "tests/test_pagination_shifts.py"],
    "pagination": ["tests/test_pagination_shifts.py", "tests/test_walk_qa.py"],
}


#: tests left out of every group (node ids): a test that fails on the unmutated code stops the run
DESELECT: list[str] = []


#: the survivors issue 15 names: (file, code, the wrong change, -k of the test in tests/test_mutants_named.py
#: that must fail on it).  mutmut credits a mutant only to tests that called the function in its
#: stats run, and misses some (the fingerprint is computed on reload): ``named`` checks these directly.
NAMED = [
    ("gateway/pagination/offset.py", "        offset += len(items)\n        yield served(offset, items)\n    position.ended.add(\"\")", "        offset = len(items)\n        yield served(offset, items)\n    position.ended.add(\"\")", "offset_walk"),  # noqa: E501
    ("gateway/pagination/offset.py", "            offset += len(items)\n            handed += len(items)", "            offset = len(items)\n            handed += len(items)", "offset_walk"),  # noqa: E501
    ("gateway/pagination/before.py", "if k in exhausted and not buffers[k]:", "if k in exhausted or not buffers[k]:", "merged_streams"),  # noqa: E501
    ("gateway/pagination/before.py", "if k in exhausted and not buffers[k]:", "if k in exhausted and buffers[k]:", "merged_streams"),  # noqa: E501
    ("gateway/pagination/__init__.py", "if handed > pag.max_items:", "if handed >= pag.max_items:", "max_items"),
    ("gateway/mapping.py", "            out[spec.name] = [spec.default] if spec.fan_out and spec.default is not None else spec.default\n            continue", "            out[spec.name] = [spec.default] if spec.fan_out and spec.default is not None else spec.default\n            break", "optional_params"),  # noqa: E501
    ("gateway/mapping.py", "        if low in _FALSE:\n            return False", "        if low in _FALSE:\n            return True", "boolean_false"),  # noqa: E501
    ("gateway/mapping.py", "        return quote(text, safe=\"\") if segment else text", "        return text", "path_params"),  # noqa: E501
    ("gateway/cache/policy.py", "for part in (route_fingerprint, \"GET\", norm, client, credential, vary):", "for part in (\"GET\", norm, client, credential, vary):", "reloaded_mapping"),  # noqa: E501
    ("gateway/cache/policy.py", "return float(max(value, 0))", "return float(max(value, 1))", "max_age_zero"),
    ("gateway/cache/policy.py", "bound = limit if bound is None else min(bound, limit)", "bound = limit if bound is None else max(bound, limit)", "strictest_freshness"),  # noqa: E501
    ("gateway/cache/policy.py", "return (*(f\"t:{p}\" for p in _ancestors(path)), f\"s:{path}\", f\"r:{route}\")", "return (*(f\"t:{p}\" for p in _ancestors(path)), f\"s:{path}\")", "invalidates"),  # noqa: E501
]


#: why the position an ``all=true`` walk leaves behind does not matter
ALL_TRUE = "the all=true part of the walk: its answer carries no cursor, so nothing reads ended or the position"

#: survivors that cannot change what anyone sees: (file, the line, the line as mutated, why).
#: Matched on the changed line, not on mutmut's numbering (which shifts when the code does).
EQUIVALENT: list[tuple[str, str, str, str]] = [
    # --- gateway/cache/policy.py
    *(("gateway/cache/policy.py", line, line.replace(name, spelled),
       "header names: every caller passes aiohttp's case-insensitive headers")
      for line in ('raw = headers.get("Cache-Control")',
                   'if raw is None and "Pragma" not in headers:',
                   'no_cache = "no-cache" in cc or "no-cache" in headers.get("Pragma", "").lower()',
                   'cc = _directives(",".join(headers.getall("Cache-Control", [])))',
                   'expires = headers.get("Expires")',
                   'limit = _expires_in(expires, headers.get("Date"), now)')
      for name in ("Cache-Control", "Pragma", "Expires", "Date") if name in line
      for spelled in (name.lower(), name.upper())),
    ("gateway/cache/policy.py", 'cc = _directives(raw or "")', 'cc = _directives(raw or "XXXX")',
     "a made-up directive name: no-store, no-cache and max-age read the same"),
    ("gateway/cache/policy.py",
     'no_cache = "no-cache" in cc or "no-cache" in headers.get("Pragma", "").lower()',
     'no_cache = "no-cache" in cc or "no-cache" in headers.get("Pragma", "XXXX").lower()',
     "the default of an absent Pragma never contains no-cache either way"),
    ("gateway/cache/policy.py",
     'segs.append(quote(path_params[seg.parts[0][1]], safe="") if seg.is_single_param else seg.raw)',
     'segs.append(quote(path_params[seg.parts[0][1]], ) if seg.is_single_param else seg.raw)',
     "differs only for '/', which routing refuses in a path param (bad_path_param) before the cache"),
    ("gateway/cache/policy.py",
     'segs.append(quote(path_params[seg.parts[0][1]], safe="") if seg.is_single_param else seg.raw)',
     'segs.append(quote(path_params[seg.parts[0][1]], safe="XXXX") if seg.is_single_param else seg.raw)',
     "'X' is unreserved: quote never escapes it"),
    *(("gateway/cache/policy.py",
       'stable = replace(route, line=0, description="", targets=tuple(replace(t, line=0) for t in route.targets))',
       new, "another constant in place of a constant: every route's fingerprint stays independent of it")
      for new in (
          'stable = replace(route, line=None, description="", targets=tuple(replace(t, line=0) for t in route.targets))',  # noqa: E501
          'stable = replace(route, line=1, description="", targets=tuple(replace(t, line=0) for t in route.targets))',
          'stable = replace(route, line=0, description=None, targets=tuple(replace(t, line=0) for t in route.targets))',
          'stable = replace(route, line=0, description="XXXX", targets=tuple(replace(t, line=0) for t in route.targets))',  # noqa: E501
          'stable = replace(route, line=0, description="", targets=tuple(replace(t, line=None) for t in route.targets))',  # noqa: E501
          'stable = replace(route, line=0, description="", targets=tuple(replace(t, line=1) for t in route.targets))',
      )),
    ("gateway/cache/policy.py", "return hashlib.sha256(text.encode()).hexdigest()[:16]",
     "return hashlib.sha256(text.encode()).hexdigest()[:17]",
     "a digest one character longer: keys stay distinct and stable"),
    ("gateway/cache/policy.py", "return CacheKey(route.name, path, h.hexdigest()[:40])",
     "return CacheKey(route.name, path, h.hexdigest()[:41])",
     "a digest one character longer: keys stay distinct and stable"),
    *(("gateway/cache/policy.py",
       'norm = "&".join(f"{quote(k, safe=\'\')}={quote(v, safe=\'\')}" for k, v in sorted(query))', new,
       "the normalized query stays one-to-one: '&' and '=' are still escaped inside names and values")
      for new in (
          'norm = "XX&XX".join(f"{quote(k, safe=\'\')}={quote(v, safe=\'\')}" for k, v in sorted(query))',
          'norm = "&".join(f"{quote(k, )}={quote(v, safe=\'\')}" for k, v in sorted(query))',
          'norm = "&".join(f"{quote(k, safe=\'XXXX\')}={quote(v, safe=\'\')}" for k, v in sorted(query))',
          'norm = "&".join(f"{quote(k, safe=\'\')}={quote(v, )}" for k, v in sorted(query))',
          'norm = "&".join(f"{quote(k, safe=\'\')}={quote(v, safe=\'XXXX\')}" for k, v in sorted(query))',
      )),
    ("gateway/cache/policy.py",
     'vary = "\\x00".join(f"{name}={headers.get(name, \'\')}" for name in spec.vary)',
     'vary = "XX\\x00XX".join(f"{name}={headers.get(name, \'\')}" for name in spec.vary)',
     "another separator no header value can hold: the vary part stays one-to-one"),
    ("gateway/cache/policy.py", 'for part in (route_fingerprint, "GET", norm, client, credential, vary):',
     'for part in (route_fingerprint, "XXGETXX", norm, client, credential, vary):',
     "another constant in every key (HEAD shares GET's entry either way)"),
    ("gateway/cache/policy.py", 'for part in (route_fingerprint, "GET", norm, client, credential, vary):',
     'for part in (route_fingerprint, "get", norm, client, credential, vary):',
     "another constant in every key (HEAD shares GET's entry either way)"),
    ("gateway/cache/policy.py", 'h.update(b"\\x1f")', 'h.update(b"XX\\x1fXX")',
     "another separator none of the hashed parts can hold"),
    ("gateway/cache/policy.py", "for i in range(1, len(parts) + 1):", "for i in range(len(parts) + 1):",
     "adds '/' a second time: a repeated marker changes nothing"),
    ("gateway/cache/policy.py", "for i in range(1, len(parts) + 1):", "for i in range(1, len(parts) + 2):",
     "adds the whole path a second time: a repeated marker changes nothing"),
    # --- gateway/mapping.py
    *(("gateway/mapping.py", line, mutated,
       "the error's route: the server fills a missing one from the request it answers (middleware, NDJSON)")
      for line, mutated in (
          ('raise BadRequest("; ".join(problems), code="bad_query", route=route.name, details=problems)',
           'raise BadRequest("; ".join(problems), code="bad_query", route=None, details=problems)'),
          ('raise BadRequest("; ".join(problems), code="bad_query", route=route.name, details=problems)',
           'raise BadRequest("; ".join(problems), code="bad_query", details=problems)'),
          ("route=route,", "route=None,"),
          ("route=route,\n)", ")"),
          ("out = {key: evaluate(expr, obj, params, location, route, key) for key, expr in mapping}",
           "out = {key: evaluate(expr, obj, params, location, None, key) for key, expr in mapping}"),
          ("return _cast(expr, value, route, key)", "return _cast(expr, value, None, key)"),
          ('f"upstream value for {key!r} is not {expr.cast}: {value!r}", code="shape_drift", route=route',
           'f"upstream value for {key!r} is not {expr.cast}: {value!r}", code="shape_drift", route=None'),
          ('f"upstream value for {key!r} is not {expr.cast}: {value!r}", code="shape_drift", route=route\n) from None',
           'f"upstream value for {key!r} is not {expr.cast}: {value!r}", code="shape_drift", ) from None'),
      )),
    ("gateway/mapping.py", "value = render(tpl, params, segment=False)", "value = render(tpl, params, segment=None)",
     "None is as false as False: render only tests it"),
    *(("gateway/mapping.py", line, line.replace('safe=""', 'safe="XXXX"'), "'X' is unreserved: quote never escapes it")
      for line in ('return quote(text, safe="") if segment else text',
                   'out.append(quote(piece, safe="") if segment else piece)')),
    # --- gateway/pagination/
    *(
        (
            "gateway/pagination/next_url.py",
            'values = getall("Link", []) if getall is not None else [answer.headers.get("Link", "")]',
            mutated,
            "an Answer's headers are the upstream response's (CIMultiDictProxy): getall is there, names ignore case",
        )
        for mutated in (
            'values = getall("link", []) if getall is not None else [answer.headers.get("Link", "")]',
            'values = getall("LINK", []) if getall is not None else [answer.headers.get("Link", "")]',
            'values = getall("Link", []) if (getall is not None) or True else [answer.headers.get("Link", "")]',
            'values = getall("Link", []) if getall is not None else [answer.headers.get(None, "")]',
            'values = getall("Link", []) if getall is not None else [answer.headers.get("Link", None)]',
            'values = getall("Link", []) if getall is not None else [answer.headers.get("")]',
            'values = getall("Link", []) if getall is not None else [answer.headers.get("Link", )]',
            'values = getall("Link", []) if getall is not None else [answer.headers.get("XXLinkXX", "")]',
            'values = getall("Link", []) if getall is not None else [answer.headers.get("link", "")]',
            'values = getall("Link", []) if getall is not None else [answer.headers.get("LINK", "")]',
            'values = getall("Link", []) if getall is not None else [answer.headers.get("Link", "XXXX")]',
        )
    ),
    (
        "gateway/pagination/next_url.py",
        'getall = getattr(answer.headers, "getall", None)',
        'getall = getattr(answer.headers, "getall", )',
        "an Answer's headers are the upstream response's (CIMultiDictProxy): getall is always there",
    ),
    (
        "gateway/pagination/page.py",
        "total = dig(answer.body, pag.total_path) if pag.total_path else None",
        "total = dig(answer.body, pag.total_path) if (pag.total_path) or True else None",
        "with no total declared, dig of the empty path is the whole page (a dict or list), never an int",
    ),
    ("gateway/pagination/next_url.py", "same = False", "same = None", "None is as false as False: only tested"),
    ("gateway/pagination/before.py", "advanced = False", "advanced = None", "None is as false as False: only tested"),
    ("gateway/pagination/before.py", "if _field(pag, items[-1], route) <= run.value:",
     "if _field(pag, items[-1], route) < run.value:",
     "skipping on past a page that ends at the run's value changes nothing: every later page is strictly below it"),
    *(("gateway/pagination/before.py", "ended = k in exhausted and not rest", mutated,
       "a stream that ended is in the cursor's ended list: the position kept for it is never read")
      for mutated in ("ended = None", "ended = k in exhausted and rest")),
    *(
        ("gateway/pagination/linked.py", line, mutated, "the same items are taken: a slice stops at the page's end")
        for line, mutated in (
            (
                "room = len(items) - skip if limit is None else min(len(items) - skip, limit - handed)",
                "room = len(items) + skip if limit is None else min(len(items) - skip, limit - handed)",
            ),
            (
                "room = len(items) - skip if limit is None else min(len(items) - skip, limit - handed)",
                "room = len(items) - skip if limit is None else min(len(items) + skip, limit - handed)",
            ),
            ("take = items[skip : skip + max(room, 0)]", "take = items[skip : skip + max(room, 1)]"),
        )
    ),
    *(
        (
            "gateway/pagination/linked.py",
            'position.pos[""] = {"t": token, "s": skip + len(take)}\nposition.ended.add("")',
            mutated + '\nposition.ended.add("")',
            "the position of a walk that ended: no cursor is issued for it, nothing reads it",
        )
        for mutated in (
            'position.pos[""] = None',
            'position.pos["XXXX"] = {"t": token, "s": skip + len(take)}',
            'position.pos[""] = {"XXtXX": token, "s": skip + len(take)}',
            'position.pos[""] = {"T": token, "s": skip + len(take)}',
            'position.pos[""] = {"t": token, "XXsXX": skip + len(take)}',
            'position.pos[""] = {"t": token, "S": skip + len(take)}',
            'position.pos[""] = {"t": token, "s": skip - len(take)}',
        )
    ),
    # the binding is computed the same way when a cursor is written and when it is read: a change
    # that keeps path values apart and the target named gives an equally good digest
    *(
        ("gateway/pagination/cursor.py", line, line.replace(old, new), "binding: the same digest both ways")
        for line, old, new in (
            ('parts = [str(params.get(name, "")) for name in sorted(route.path.names)]', 'name, ""', "name, None"),
            ('parts = [str(params.get(name, "")) for name in sorted(route.path.names)]', 'name, ""', "name, "),
            ('parts = [str(params.get(name, "")) for name in sorted(route.path.names)]', 'name, ""', 'name, "XXXX"'),
            ('return hashlib.sha256("\\0".join(parts).encode()).hexdigest()[:16]', '"\\0"', '"XX\\0XX"'),
            ('return hashlib.sha256("\\0".join(parts).encode()).hexdigest()[:16]', "[:16]", "[:17]"),
        )
    ),
    (
        "gateway/pagination/cursor.py",
        'return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))',
        'return base64.urlsafe_b64decode(text + "=" * (+len(text) % 4))',
        "the decoder ignores excess '=' padding (3 instead of 1)",
    ),
    *(
        ("gateway/pagination/offset.py", 'start = int(position.pos.get("", 0) or 0)', mutated, "None or 0 is 0")
        for mutated in ('start = int(position.pos.get("", None) or 0)', 'start = int(position.pos.get("", ) or 0)')
    ),
    *(
        ("gateway/pagination/offset.py", line, line.replace('add("")', added), ALL_TRUE)
        # the walk's end without a count; after the pages fetched at once; after following next
        for line in (
            '        position.ended.add("")',
            'if not more:\nposition.ended.add("")',
            '    position.ended.add("")',
        )
        for added in ("add(None)", 'add("XXXX")')
    ),
    ("gateway/pagination/offset.py", "break", "return", ALL_TRUE),
    (
        "gateway/pagination/offset.py",
        'yield served(offset, items)\nposition.ended.add("")',
        'yield served(None, items)\nposition.ended.add("")',
        ALL_TRUE,
    ),
    (
        "gateway/pagination/offset.py",
        "if count is not None and count > offset:",
        "if count is not None and count >= offset:",
        "count == offset: nothing is left to fetch at once, and the walk goes on by next as before",
    ),
    *(
        (
            "gateway/pagination/common.py",
            'raw = json.dumps(item, sort_keys=True, separators=(",", ":"), default=str).encode()',
            mutated,
            "items are parsed JSON: json.dumps never calls default for them",
        )
        for mutated in (
            'raw = json.dumps(item, sort_keys=True, separators=(",", ":"), default=None).encode()',
            'raw = json.dumps(item, sort_keys=True, separators=(",", ":"), ).encode()',
        )
    ),
]

_RELAYED_TYPE = 'headers["Content-Type"] = resp.headers.get("Content-Type", "application/octet-stream")'

#: the pipeline group's equivalent survivors
PIPELINE_EQUIVALENT: list[tuple[str, str, str, str]] = [
    # --- gateway/pipeline/body.py
    *(("gateway/pipeline/body.py", "while chunk := await request.content.read(limit + 1 - size):", mutated,
       "reads a few bytes more per call before refusing: a body over the limit is the same 413, one within it the same")
      for mutated in ("while chunk := await request.content.read(limit + 1 + size):",
                      "while chunk := await request.content.read(limit + 2 - size):")),
    ("gateway/pipeline/body.py", "parsed: Any = None", 'parsed: Any = ""',
     "an empty body gets here only where no target passes the body through (else missing_body), so nothing"
     " sends it; both validators refuse None and '' alike (the body must be a JSON object)"),
    # --- gateway/pipeline/conventions.py
    ("gateway/pipeline/conventions.py", 'return request.query.get("all", "").lower() in _TRUE',
     'return request.query.get("all", "XXXX").lower() in _TRUE', "neither '' nor 'xxxx' is a true value"),
    *(("gateway/pipeline/conventions.py", line, line.replace('"Vary"', spelled),
       "header names: aiohttp's response headers ignore case")
      for line in ('vary = resp.headers.get("Vary")', 'resp.headers["Vary"] = "Accept-Encoding"',
                   'resp.headers["Vary"] = f"{vary}, Accept-Encoding"')
      for spelled in ('"vary"', '"VARY"')),
    *(("gateway/pipeline/conventions.py", line, line.replace(name, spelled),
       "header names: aiohttp's request and response headers ignore case")
      for line, name in (('etag = headers.get("ETag")', "ETag"),
                         ('etag = headers["ETag"] = etag_of(body)  # a cached entry stored its own', "ETag"),
                         ('asked = http(ex).headers.get("If-None-Match")', "If-None-Match"))
      for spelled in (name.lower(), name.upper())),
    *(("gateway/pipeline/conventions.py",
       "return 'W/\"' + hashlib.sha1(body, usedforsecurity=False).hexdigest()[:24] + '\"'",
       f"return 'W/\"' + hashlib.sha1(body, {flag}).hexdigest()[:24] + '\"'",
       "usedforsecurity only tells a FIPS build what the digest is for: the digest is the same")
      for flag in ("usedforsecurity=None", "usedforsecurity=True", "")),
    # --- gateway/proxy/respond.py
    *(("gateway/proxy/respond.py", line, line.replace(name, spelled),
       "header names: the upstream's headers and the relayed response's ignore case")
      for line, name in (
          (_RELAYED_TYPE, 'headers["Content-Type"]'),
          (_RELAYED_TYPE, 'get("Content-Type"'),
          ('headers["X-Request-ID"] = request_id  # the response is on the wire before the middleware sees it',
           'headers["X-Request-ID"]'),
      )
      for spelled in (name.replace(name.split('"')[1], name.split('"')[1].lower()),
                      name.replace(name.split('"')[1], name.split('"')[1].upper()))),
    *(("gateway/proxy/respond.py", 'ctype = resp.headers.get("Content-Type", "application/octet-stream")',
       f'ctype = resp.headers.get("{spelled}", "application/octet-stream")', "header names: the upstream's ignore case")
      for spelled in ("content-type", "CONTENT-TYPE")),
    *(("gateway/proxy/respond.py", 'headers["Content-Type"] = ctype', f'headers["{spelled}"] = ctype',
       "header names: the response's headers ignore case") for spelled in ("content-type", "CONTENT-TYPE")),
    ("gateway/proxy/respond.py", "await super().write_eof(data)", "await super().write_eof(None)",
     "aiohttp's Response.write_eof only asserts that its data is empty, and None is as empty as b''"),
    ("gateway/proxy/respond.py", "self._body = None", 'self._body = ""', "an empty string holds no more than None"),
    ("gateway/proxy/respond.py", "self._answer = None", 'self._answer = ""', "an empty string holds no answer either"),
    # --- gateway/proxy/status.py
    *(("gateway/proxy/status.py",
       'route.shape, resp.status, resp.headers.get("Content-Type", ""), resp.location is not None, route.name',
       mutated, why)
      for mutated, why in (
          ('route.shape, resp.status, resp.headers.get("content-type", ""), resp.location is not None, route.name',
           "header names: the upstream's headers ignore case"),
          ('route.shape, resp.status, resp.headers.get("CONTENT-TYPE", ""), resp.location is not None, route.name',
           "header names: the upstream's headers ignore case"),
          ('route.shape, resp.status, resp.headers.get("Content-Type", ""), resp.location is not None, None',
           "the error's route: the server fills a missing one from the request it answers"),
      )),
    # --- gateway/pipeline/collection.py
    ("gateway/pipeline/collection.py", "as_ndjson: bool = False,", "as_ndjson: bool = True,",
     "every caller passes as_ndjson (the collection stage, gateway.pipeline.stages.collection)"),
    *(("gateway/pipeline/collection.py", line, mutated,
       "every caller passes a query: an Exchange's defaults to an empty one (gateway.pipeline.Exchange)")
      for line, mutated in (
          ("assert request is not None\nquery = request.query", "assert request is None\nquery = request.query"),
          ("query = request.query", "query = None"),
      )),
    ("gateway/pipeline/collection.py",
     "return params if stream is None or fan is None else {**params, fan.name: stream}",
     "return params if stream is None and fan is None else {**params, fan.name: stream}",
     "the streams are [None] exactly when the route has no fan-out: both tests agree"),
    ("gateway/pipeline/collection.py", "fetch = functools.partial(fetch_from, None, False)",
     "fetch = functools.partial(fetch_from, None, None)", "None is as false as False: underway is only tested"),
    ("gateway/pipeline/collection.py", "fetch = functools.partial(fetch_from, None, False)",
     "fetch = functools.partial(fetch_from, None, True)",
     "without ``only`` every target is tried in turn, and underway is read only with ``only`` (proxy.targets)"),
    *(("gateway/proxy/status.py", "detail = redact(upstream_message(resp.body), fresh=True)", mutated,
       "every error leaving a route is redacted again with freshly read secrets (Proxy.handle, Proxy.probe:"
       " scrub); tests/test_mutants_pipeline.py shows a renewed token hidden")
      for mutated in ("detail = redact(upstream_message(resp.body), fresh=None)",
                      "detail = redact(upstream_message(resp.body), fresh=False)",
                      "detail = redact(upstream_message(resp.body), )")),
    *(("gateway/proxy/status.py", 'headers={"Retry-After": retry} if retry else None,',
       f'headers={{"{spelled}": retry}} if retry else None,', "header names: the response's headers ignore case")
      for spelled in ("retry-after", "RETRY-AFTER")),
    ("gateway/proxy/status.py", "data = jsonio.loads(body) if body else None",
     "data = jsonio.loads(body) if (body) or True else None",
     "an empty body does not parse: the same '' either way"),
]
EQUIVALENT += PIPELINE_EQUIVALENT

#: lines that only word an error message: a survivor changing nothing but string literals on one
#: of them is not counted (file, a piece of the line)
MESSAGES: list[tuple[str, str]] = [
    ("gateway/mapping.py", 'raise BadRequest("; ".join(problems)'),  # the details list is what it joins
    ("gateway/pagination/common.py", 'raise ShapeDrift(f"upstream page has no list at'),
    ("gateway/pagination/common.py", "f\"upstream page has no {'.'.join(path)!r} field"),
    ("gateway/pagination/common.py", 'def stalled(route: str, why: str = "'),
    ("gateway/pagination/common.py", 'f"upstream pagination did not advance ({why}); stopped"'),
    ("gateway/pagination/common.py", 'raise stalled(route, "'),
    ("gateway/pagination/linked.py", 'raise stalled(route, "'),
    ("gateway/pagination/before.py", 'raise stalled(route, f"'),
    ("gateway/pagination/before.py", 'raise ShapeDrift(f"upstream item lost its paging field'),
    ("gateway/pagination/before.py", '"the cursor is not valid for this route'),
    ("gateway/pagination/cursor.py", 'f"more than {MAX_TIED} items share one paging value'),
    ("gateway/pagination/cursor.py", '"(ask with a larger limit, or all=true)"'),
    ("gateway/pagination/cursor.py", '"the cursor is not valid for this route'),
    ("gateway/pagination/cursor.py", "raise ValueError("),  # never shown: every one becomes the same 400
    ("gateway/pagination/next_url.py", "\"the upstream's next link leaves its origin or base path"),
    ("gateway/pagination/__init__.py", 'f"the collection has more than {pag.max_items} items'),
    ("gateway/pagination/__init__.py", '"page through it with cursors instead of all=true"'),
    ("gateway/pagination/__init__.py", 'assert base_url is not None, "'),
    ("gateway/pipeline/body.py", 'f"send the body as {JSON_TYPE}, not {_sent_type'),
    ("gateway/pipeline/body.py", 'f"send the body as UTF-8 (RFC 8259), not charset='),
    ("gateway/pipeline/collection.py", 'raise AssertionError("the last target never hands over")'),
    ("gateway/pipeline/collection.py", 'f"the cursor was issued for {fan.name}='),
]

#: the ``calls`` group's survivors that cannot change what anyone sees (as in EQUIVALENT)
CALLS_EQUIVALENT: list[tuple[str, str, str, str]] = [
    # --- gateway/pipeline/
    *(("gateway/pipeline/__init__.py", 'core_name: str = "proxy",', f'core_name: str = "{name}",',
       "every caller (gateway.proxy) names the core: the default is never used") for name in ("XXproxyXX", "PROXY")),
    ("gateway/pipeline/calls.py", "self.target = self.only", "self.target = None",
     "only a mixed-paging walk passes only, and its route always has the fallback stage, which sets the target"
     " before any stage reads it"),
    ("gateway/pipeline/calls.py", "raise handover.HandOver(index)", "raise handover.HandOver(None)",
     "the walk that catches HandOver (gateway.pipeline.collection._walk) never reads its index"),
    *(("gateway/pipeline/stages.py",
       'return route.pagination is not None and ndjson.wants_ndjson(request.headers.get("Accept", ""))',
       f'return route.pagination is not None and ndjson.wants_ndjson(request.headers.get("{name}", ""))',
       "request headers are aiohttp's case-insensitive multidict") for name in ("accept", "ACCEPT")),
    ("gateway/pipeline/stages.py",
     'return route.pagination is not None and ndjson.wants_ndjson(request.headers.get("Accept", ""))',
     'return route.pagination is not None and ndjson.wants_ndjson(request.headers.get("Accept", "XXXX"))',
     "a made-up Accept asks for no NDJSON, as an absent one does"),
    # --- gateway/proxy/__init__.py: what the one caller (gateway.server.state) always passes
    ("gateway/proxy/__init__.py", "self.creds = creds", "self.creds = None",
     "nothing reads Proxy.creds: Targets and the cursor key are given the credentials themselves"),
    *(("gateway/proxy/__init__.py", "self.health = health if health is not None else RouteHealth(metrics)", new,
       "the only caller (gateway.server.state) passes the Gateway's RouteHealth")
      for new in ("self.health = health if (health is not None) or True else RouteHealth(metrics)",
                  "self.health = health if health is not None else RouteHealth(None)")),
    *(("gateway/proxy/__init__.py",
       "self.redact = redactor if redactor is not None else Redactor(lambda: secret_values(config, creds))",
       f"self.redact = redactor if {cond} else Redactor(lambda: {source})",
       "the only caller passes the Gateway's redactor, which hides the same secrets (secret_values of the same"
       " config and credentials)")
      for cond, source in (
          ("(redactor is not None) and False", "secret_values(config, creds)"),
          ("(redactor is not None) or True", "secret_values(config, creds)"),
          ("redactor is None", "secret_values(config, creds)"),
          ("redactor is not None", "None"),
          ("redactor is not None", "secret_values(None, creds)"),
          ("redactor is not None", "secret_values(config, None)"),
          ("redactor is not None", "secret_values(creds)"),
          ("redactor is not None", "secret_values(config, )"),
      )),
    ("gateway/proxy/__init__.py",
     "self.redact = redactor if redactor is not None else Redactor(lambda: secret_values(config, creds))",
     "self.redact = redactor if redactor is not None else Redactor(None)",
     "the only caller passes the Gateway's redactor: the fallback is never built"),
    *(("gateway/proxy/__init__.py", "record = trace if trace is not None else RequestTrace(route=match.route.name)",
       new, "the only caller (gateway.server.stable) passes the request's record")
      for new in ("record = trace if (trace is not None) or True else RequestTrace(route=match.route.name)",
                  "record = trace if trace is not None else RequestTrace(route=None)")),
    *(("gateway/proxy/__init__.py", 'headers = self.targets.headers(upstream, route, "")',
       f"headers = self.targets.headers(upstream, route, {rid})",
       "the request id is no part of the credential a budget is kept for (gateway.sends.credential_id)")
      for rid in ("None", '"XXXX"')),
    ("gateway/proxy/__init__.py",
     "None, Match(route, dict(path_params)), request_id, RequestTrace(route.name), query=MultiDict(query)",
     "None, Match(route, dict(path_params)), request_id, RequestTrace(None), query=MultiDict(query)",
     "a probe's record feeds no access line: nothing reads its route"),
    ("gateway/proxy/__init__.py",
     "None, Match(route, dict(path_params)), request_id, RequestTrace(route.name), query=MultiDict(query)",
     "None, Match(None, dict(path_params)), request_id, RequestTrace(route.name), query=MultiDict(query)",
     "a probe's stages (account, params, the core) are composed for the route: none reads the match's route"),
    *(("gateway/proxy/__init__.py", "return {k: _scrub_details(v, redact) for k, v in details.items()}", new,
       "no error the proxy scrubs has a dict in its details (lists of problem strings: gateway.mapping,"
       " gateway.validators)")
      for new in ("return {k: _scrub_details(None, redact) for k, v in details.items()}",
                  "return {k: _scrub_details(v, None) for k, v in details.items()}",
                  "return {k: _scrub_details(redact) for k, v in details.items()}",
                  "return {k: _scrub_details(v, ) for k, v in details.items()}")),
    # --- gateway/proxy/targets.py
    *(("gateway/proxy/targets.py", 'headers["Accept"] = headers.get("Accept", "application/json, */*;q=0.5")',
       f'headers["{name}"] = headers.get("Accept", "application/json, */*;q=0.5")',
       "beside an upstream's own Accept (the same value) aiohttp sets a header once whatever its case"
       " (ClientSession._prepare_headers): one Accept line goes out either way")
      for name in ("accept", "ACCEPT")),
    *(("gateway/proxy/targets.py", 'headers["X-Request-ID"] = request_id', f'headers["{name}"] = request_id',
       "header names are case-insensitive on the wire, and the request id is set once")
      for name in ("x-request-id", "X-REQUEST-ID")),
    *(("gateway/proxy/targets.py", 'headers = {**headers, "Content-Type": JSON_TYPE}',
       f'headers = {{**headers, "{name}": JSON_TYPE}}',
       "header names are case-insensitive on the wire, and this is the only Content-Type set")
      for name in ("content-type", "CONTENT-TYPE")),
    ("gateway/proxy/targets.py", "headers.update(self.creds.headers_for(upstream, route.name))",
     "headers.update(self.creds.headers_for(upstream, None))",
     "only the route the missing-credential error names: the server fills it from the request"),
    ("gateway/proxy/targets.py", "path, query = _followed(upstream, route, path, at)",
     "path, query = _followed(upstream, None, path, at)",
     "only the route the bad-link error names: the server fills it from the request"),
    ("gateway/proxy/targets.py", "route=route.name,\n)", "route=None,\n)",
     "only the route the bad-link error names: the server fills it from the request"),
    ("gateway/proxy/targets.py", "route=route.name,\n)", ")",
     "only the route the bad-link error names: the server fills it from the request"),
    ("gateway/proxy/targets.py",
     'f"upstream {upstream.name!r} gave a next link off the route\'s target path; it is not followed",', "",
     "message text only: the error's code stays pagination_bad_link"),
    ("gateway/proxy/targets.py", "if len(route.targets) > 1:", "if len(route.targets) >= 1:",
     "the full answered stage on a one-target route notes target 0, which /status shows for it anyway,"
     " and counts no fallback (the target is never above 0)"),
    ("gateway/proxy/__init__.py",
     "config, client, creds, metrics, self.health, self.redact, gone_check, self.failed, self._may_fill\n)",
     "config, client, creds, metrics, self.health, self.redact, gone_check, self.failed, )",
     "a one-target route no cache fills from keeps a step that only hands its notes on (there are none): the"
     " same answer through one more layer, a cost bench.breakdown measures and no answer shows"),
    ("gateway/proxy/targets.py", "return noted_one if self.cached(route) else inner",
     "return noted_one if (self.cached(route)) or True else inner",
     "a one-target route no cache fills from keeps a step that only hands its notes on (there are none): the"
     " same answer through one more layer, a cost bench.breakdown measures and no answer shows"),
    ("gateway/proxy/targets.py", "headers = call.headers", "headers = None",
     "a call's headers are a memo: made again from the same upstream, route and request id, they are equal"),
    ("gateway/proxy/targets.py", "headers = self.headers(upstream, route, request_id)", "headers = None",
     "the sample call's headers are then made by the upstream step, from the same upstream, route and id"),
    *(("gateway/proxy/targets.py", "call = Call(params, request_id, trace=trace, target=index, headers=headers)",
       new, "the sample call's headers are then made by the upstream step, from the same upstream, route and id")
      for new in ("call = Call(params, request_id, trace=trace, target=index, headers=None)",
                  "call = Call(params, request_id, trace=trace, target=index, )")),
    ("gateway/proxy/targets.py", "call = Call(params, request_id, trace=trace, target=index, headers=headers)",
     "call = Call(params, None, trace=trace, target=index, headers=headers)",
     "the request id is read only to make the call's headers, which the sample call is given made"),
    ("gateway/proxy/targets.py", "timed = self._seconds", "timed = None",
     "a memo of the route's duration child: labels() hands back the same child"),
    *(("gateway/proxy/targets.py", "counted = self._outcomes.get(outcome)", new,
       "a memo of the outcome's counter child: labels() hands back the same child")
      for new in ("counted = None", "counted = self._outcomes.get(None)")),
    ("gateway/proxy/targets.py", 'path, _, query = at.partition("?")', 'path, _, query = at.partition("XX?XX")',
     "the link's query then stays in the path string, which yarl splits at its '?' all the same: the upstream"
     " is sent its own link as it wrote it rather than re-encoded, and reads it the same"),
]

#: the ``calls`` group's lines that only word an error message (as in MESSAGES)
CALLS_MESSAGES: list[tuple[str, str]] = [
    ("gateway/pipeline/__init__.py", 'assert ex.request is not None, "'),
    ("gateway/pipeline/calls.py", 'raise AssertionError("routes have at least one target")'),
    ("gateway/proxy/targets.py", 'f"upstream {upstream.name!r} gave a next link off the route'),
]
EQUIVALENT += CALLS_EQUIVALENT
MESSAGES += CALLS_MESSAGES

_STRING = re.compile(r"""[rbfuRBFU]{0,2}("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')""")


#: calls whose route argument only names the route in an error: a mutant that drops it or passes
#: None changes nothing a client sees, as the server fills a missing route from the request
#: it answers (middleware, NDJSON stream)
ROUTE_ONLY_FOR_ERRORS = (
    "route=",
    "stalled(",
    "items_of(",
    "_field(",
    "_bad_cursor(",
    "check_advanced(",
    "require(",
    "NextLinks(",
    ".walk(",
    "name = route.name",
    "self.route = route",
    # the pipeline group: helpers handed the route's name only to put it in their errors
    "_read_limited(",
    "relay.relay(",
    "_limit(",
    "_flag(",
    "check_fields(",
    "apply_mapping(",
    "confirm_empty(",
)


def _route_only(file: str, old: str, new: str) -> bool:
    """The mutant only drops the route an error names, or names None instead."""
    mine = file.startswith("gateway/pagination/") or file in GROUPS["pipeline"][0]
    if not mine or not any(p in old for p in ROUTE_ONLY_FOR_ERRORS):
        return False

    def norm(line: str) -> str:
        line = re.sub(r"\broute=(self\.route|route\.name|route|None)\s*,?", "", line)
        line = re.sub(r"\b(self\.route|route\.name|route|name|None)\b", "R", line)
        return re.sub(r",\s*\)", ")", re.sub(r"\s+", "", line))

    return old != new and norm(old) == norm(new)


def _message_only(old: str, new: str) -> bool:
    """Only the wording changed: string literals (or a message given as None, or left to its
    default) differ, while the error's code stays the same."""
    if _CODE.findall(old) != _CODE.findall(new):
        return False

    def words_out(line: str) -> str:
        line = _STRING.sub('""', line).replace("None", '""')
        return re.sub(r",\s*\)", ")", re.sub(r',\s*""\s*(?=[,)])', "", line))

    return old != new and words_out(old) == words_out(new)


_CODE = re.compile(r"""code=("[^"]*"|'[^']*'|None)|code=""")


#: runs each named mutant's rechecking tests in a forked child of one process that has imported
#: them already (as mutmut does): one pytest start-up per survivor would take seconds each
_RECHECK = """
import json, os, signal, sys
import pytest
args, names, jobs = json.load(sys.stdin)
killed, running = [], {}

def reap():
    pid, status = os.wait()
    # 1: a test failed; ended by the alarm: a timeout, as mutmut counts one
    if (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1) or (
        os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM
    ):
        killed.append(running[pid])
    del running[pid]

for name in names:
    if len(running) >= jobs:
        reap()
    pid = os.fork()
    if pid == 0:
        os.environ["MUTANT_UNDER_TEST"] = name
        signal.alarm(120)
        os._exit(pytest.main(args))
    running[pid] = name
while running:
    reap()
print(json.dumps(killed))
"""


def _recheck(work: Path, group: str, names: list[str]) -> set[str]:
    """The survivors that the group's own mutant tests kill when run against them directly.

    mutmut runs, for each mutant, only the tests it saw calling the mutated function, and it
    misses calls made inside the gateway's request handling (async generators above all): a
    survivor it reports may well be killed.  Each is run here (with ``MUTANT_UNDER_TEST``, as
    mutmut does) against ``tests/test_mutants_named.py`` and the group's ``test_mutants_*.py``.
    """
    if not names:
        return set()
    # the group's own first: with -x, a mutant they kill costs none of the named tests' time
    tests = [f"tests/test_mutants_{group.replace('-', '_')}.py", "tests/test_mutants_named.py"]
    tests += _passing(work, [t for t in RECHECK_ALSO.get(group, []) if (work / "mutants" / t).exists()])
    args = ["-q", "-x", "-p", "no:cacheprovider", "-p", "no:randomly", *tests]
    done = subprocess.run(
        [sys.executable, "-c", _RECHECK],
        cwd=work / "mutants",
        input=json.dumps([args, names, int(os.environ.get("MUTANTS_JOBS", "2"))]),
        capture_output=True,
        text=True,
        env={**os.environ, "MUTANT_UNDER_TEST": "", "PYTHONPATH": str(work / "mutants")},
        check=True,
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def _passing(work: Path, tests: list[str]) -> list[str]:
    """The test files that pass on the unmutated copy: a kept run's code may predate today's tests, and a
    file that fails there (or cannot even be collected) would "kill" every mutant it is run against."""
    kept = []
    for test in tests:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:randomly", test],
            cwd=work / "mutants",
            capture_output=True,
            text=True,
            env={**os.environ, "MUTANT_UNDER_TEST": "", "PYTHONPATH": str(work / "mutants")},
        )
        if done.returncode == 0:
            kept.append(test)
        else:
            print(f"  (not rechecked with {test}: it fails on the unmutated code of this run)")
    return kept


def _survivors(results: Path) -> list[str]:
    out = []
    for line in results.read_text().splitlines():
        name, _, status = line.strip().rpartition(": ")
        if status in ("survived", "no tests", "not checked"):
            out.append(name)
    return out


def _diffs(work: Path, names: list[str]) -> dict[str, tuple[str, str, str, str, str, str]]:
    """(file, removed lines, added lines, the line after them, the line before them, the removed
    lines with their indentation) of each mutant, from one mutmut
    process (each ``mutmut show`` takes seconds)."""
    code = (
        "import json, sys\n"
        "from mutmut.__main__ import find_mutant, get_diff_for_mutant\n"
        "out = {}\n"
        "for name in json.load(sys.stdin):\n"
        "    try:\n"
        "        out[name] = get_diff_for_mutant(name, path=find_mutant(name).path)\n"
        "    except Exception as exc:  # listed as a survivor, never excluded\n"
        "        out[name] = f'(no diff: {exc!r})'\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=work, input=json.dumps(names), capture_output=True,
                          text=True, check=True)
    diffs: dict[str, tuple[str, str, str, str, str, str]] = {}
    for name, diff in json.loads(done.stdout.splitlines()[-1]).items():
        lines = diff.splitlines()
        file = next((ln[4:].strip() for ln in lines if ln.startswith("--- ")), "")
        old = "\n".join(ln[1:].strip() for ln in lines if ln.startswith("-") and not ln.startswith("---"))
        new = "\n".join(ln[1:].strip() for ln in lines if ln.startswith("+") and not ln.startswith("+++"))
        changed = [i for i, ln in enumerate(lines) if ln[:1] in "-+" and ln[:3] not in ("---", "+++")]
        after = next((ln.strip() for ln in lines[changed[-1] + 1 :] if ln.startswith(" ")), "") if changed else ""
        before = next((ln.strip() for ln in reversed(lines[: changed[0]]) if ln.startswith(" ")), "") if changed else ""
        raw = "\n".join(ln[1:] for ln in lines if ln[:1] == "-" and ln[:3] != "---")
        diffs[name] = (file, old, new, after, before, raw)
    return diffs


def _excluded(work: Path, survivors: list[str]) -> dict[str, str]:
    """The survivors not counted, each with why: listed in EQUIVALENT, or message text only."""
    if not survivors:
        return {}
    why: dict[str, str] = {}
    for name, (file, old, new, after, before, raw) in _diffs(work, survivors).items():
        for path, line, mutated, reason in EQUIVALENT:
            # where the same line occurs twice, an entry names the line after or before it too, or
            # gives the line with its indentation
            if path == file and (line, mutated) in (
                (old, new),
                (f"{old}\n{after}", f"{new}\n{after}"),
                (f"{before}\n{old}", f"{before}\n{new}"),
                (raw, raw[: len(raw) - len(raw.lstrip())] + new),
            ):
                why[name] = f"equivalent: {reason}"
                break
        else:
            if any(path == file and piece in old for path, piece in MESSAGES) and _message_only(old, new):
                why[name] = "message text only"
            elif _route_only(file, old, new):
                why[name] = "equivalent: only the route an error names (the server fills it from the request)"
    return why


def check_named() -> int:
    """Apply each named wrong change to a scratch copy; its test must fail.  Returns the survivors."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _copy_tree(work)
        survivors = 0
        for path, old, new, k in NAMED:
            f = work / path
            original = f.read_text()
            assert original.count(old) == 1, f"{path}: the code changed, update NAMED: {old!r}"
            f.write_text(original.replace(old, new))
            try:
                done = subprocess.run(
                    [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                     "tests/test_mutants_named.py", "-k", k],
                    cwd=work, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(work)},
                )
            finally:
                f.write_text(original)
            killed = done.returncode == 1
            survivors += not killed
            print(f"{'killed  ' if killed else 'SURVIVED'} {path}: {new.strip().splitlines()[0][:70]} ({k})")
        return survivors


def _copy_tree(work: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, work / rel)


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def _refresh_tests(work: Path) -> None:
    """The work tree's tests copied over a kept run's (``--recheck``): survivors are run again
    against the tests written since mutmut ran."""
    for copy in (work / "tests", work / "mutants" / "tests"):
        if copy.exists():
            shutil.rmtree(copy)
        shutil.copytree(ROOT / "tests", copy, ignore=shutil.ignore_patterns("__pycache__"))


def _counts(results: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in results.splitlines():
        status = line.rpartition(":")[2].strip()
        if status:
            counts[status] = counts.get(status, 0) + 1
    return counts


def run_group(name: str, keep: Path, recheck_only: bool = False) -> dict[str, int]:
    mutate, tests = GROUPS[name]
    deselect = [arg for test in DESELECT for arg in ("--deselect", test)]
    work = keep / name
    if recheck_only:
        _refresh_tests(work)
        return _results(name, keep, work)
    if work.exists():
        shutil.rmtree(work)
    _copy_tree(work)
    pyproject = work / "pyproject.toml"
    text = re.sub(r"\n\[tool\.mutmut\][^\[]*", "\n", pyproject.read_text())
    pyproject.write_text(
        text
        + "\n[tool.mutmut]\n"
        + 'source_paths = ["gateway"]\n'
        + f"only_mutate = {_toml_list(mutate)}\n"
        + f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
        + f"also_copy = {_toml_list(['routes.yaml', 'deploy', 'docs', 'mkdocs.yml', 'examples', 'scripts'])}\n"
        + f"pytest_add_cli_args = {_toml_list(['-q', '-p', 'no:cacheprovider', '-p', 'no:randomly', *deselect])}\n"
        + "use_git_change_detection = false\n"
    )
    subprocess.run([sys.executable, "-m", "mutmut", "run"], cwd=work, check=False)
    return _results(name, keep, work)


def _results(name: str, keep: Path, work: Path) -> dict[str, int]:
    """mutmut's verdicts, kept in ``GROUP.results.txt`` (an interrupted run's too)."""
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=work,
                         capture_output=True, text=True).stdout
    (keep / f"{name}.results.txt").write_text(out)
    return _counts(out)


def main() -> int:
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
        return 0
    unknown = [a for a in sys.argv[1:] if a not in GROUPS and a not in ("named", "--recheck")]
    if unknown:
        print(f"mutants.py: no group {unknown[0]!r}; groups: {', '.join(GROUPS)} (or named)", file=sys.stderr)
        return 2
    if sys.argv[1:] == ["named"]:
        return 1 if check_named() else 0
    recheck_only = "--recheck" in sys.argv[1:]
    names = [a for a in sys.argv[1:] if a != "--recheck"] or list(GROUPS)
    keep = Path(tempfile.gettempdir()) / "routegate-mutants"
    keep.mkdir(exist_ok=True)
    for name in names:
        counts = run_group(name, keep, recheck_only)
        killed = counts.get("killed", 0) + counts.get("timeout", 0)
        # a run stopped part-way leaves mutants "not checked": they count, and go to the recheck below
        total = sum(counts.values())
        survivors = _survivors(keep / f"{name}.results.txt")
        why = _excluded(keep / name, survivors)
        left = [s for s in survivors if s not in why]
        rechecked = _recheck(keep / name, name, left)
        killed += len(rechecked)
        left = [s for s in left if s not in rechecked]
        counted = total - len(why)
        score = 100 * killed / counted if counted else 0.0
        lines = [f"{s}: {why[s]}" for s in survivors if s in why]
        lines += [f"{s}: killed on recheck" for s in rechecked] + [f"{s}: SURVIVED" for s in left]
        (keep / f"{name}.survivors.txt").write_text("\n".join(lines) + "\n")
        print(f"{name}: {counts}; {len(rechecked)} of mutmut's survivors killed on recheck")
        print(f"{name}: killed {killed} / ({total} - {len(why)} excluded as equivalent or message text)"
              f" = {score:.1f}%  ({len(left)} survivors counted; {keep / name}, {name}.survivors.txt)")
        for s in left:
            print(f"    SURVIVED {s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
