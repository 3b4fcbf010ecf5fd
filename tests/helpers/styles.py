"""The routes.yaml for the pagination-style tests (shared with the cursor tests)."""

from __future__ import annotations

STYLES_YAML = """
upstreams:
  posthog:
    base_url: ${POSTHOG_URL}
    retries: {attempts: 1}
    auth:
      bearer: {env: POSTHOG_API_KEY}
routes:
  by_link:
    stable: GET /v1/by-link
    upstream: posthog
    pagination: {style: next_url, next: next, size_param: limit, page_size: 40}
    targets: ["GET /api/projects/1/notebooks/"]
    response: {items: {id: short_id}}
  by_header:
    stable: GET /v1/by-header
    upstream: posthog
    pagination: {style: next_url, size_param: limit, page_size: 40}
    targets: ["GET /api/projects/1/notebooks/"]
    response: {items: {id: short_id}}
  by_token:
    stable: GET /v1/by-token
    upstream: posthog
    pagination: {style: cursor, token: meta.next_cursor, has_more: meta.has_more, size_param: limit, page_size: 30}
    targets: ["GET /api/projects/1/notebooks/"]
    response: {items: {id: short_id}}
  activity_offset:
    stable: GET /v1/activity-offset/{short_id}
    upstream: posthog
    pagination: {style: offset, count: total_count}
    targets: ["GET /api/projects/1/notebooks/{short_id}/activity"]
    response: {items: {activity: activity, created_at: created_at}}
"""
