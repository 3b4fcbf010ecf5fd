"""Sandbox upstreams: local emulations of the Observable and PostHog APIs."""
