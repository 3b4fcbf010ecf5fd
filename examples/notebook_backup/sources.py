"""The collections a run backs up (Observable notebooks, a PostHog project's) and where each lands."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")  # ids become file names: nothing else is accepted


def _never_left(doc: Any) -> bool:
    return False


@dataclass
class Source:
    """One collection to back up and how its notebooks map to files and index entries."""

    kind: str  # observable | posthog
    label: str
    list_path: str
    list_params: dict[str, str]
    detail_path: Callable[[str], str]
    key: Callable[[str], str]
    file: Callable[[str], str]
    #: the listed fields that change when the notebook does
    fingerprint: tuple[str, ...]
    #: only index entries this returns True for (e.g. the requested types) can be marked gone
    owns: Callable[[dict[str, Any]], bool]
    extra: dict[str, str] = field(default_factory=dict)
    #: the document itself says it left what is backed up (served, yet rightly not listed): it is gone
    left: Callable[[Any], bool] = _never_left


def observable_source(types: list[str]) -> Source:
    return Source(
        kind="observable",
        label="observable " + ",".join(types),
        list_path="/v1/observable/notebooks",
        list_params={"type": ",".join(types)},
        detail_path=lambda i: f"/v1/observable/notebooks/{i}",
        key=lambda i: f"observable/{i}",
        file=lambda i: f"observable/{i}.json",
        fingerprint=("updated_at", "version"),
        owns=lambda e: e.get("source") == "observable" and e.get("type") in types,
        # a notebook moved to the trash is still served by its id, but the trash is not backed up
        left=lambda doc: "trash" not in types and isinstance(doc, dict) and doc.get("trashed") is True,
    )


def posthog_source(project: str) -> Source:
    return Source(
        kind="posthog",
        label=f"posthog project {project}",
        list_path=f"/v1/posthog/projects/{project}/notebooks",
        list_params={},
        detail_path=lambda i: f"/v1/posthog/projects/{project}/notebooks/{i}",
        key=lambda i: f"posthog/{project}/{i}",
        file=lambda i: f"posthog/{project}/{i}.json",
        fingerprint=("updated_at",),
        owns=lambda e: e.get("source") == "posthog" and e.get("project") == project,
        extra={"project": project},
    )
