"""routes.yaml → typed, frozen config objects, built once per load.

Everything the hot path needs (path matchers, templates, regexes, pre-serialized
constant bodies) is compiled here, so serving a request never touches YAML or
compiles a pattern.  Loading never stops at the first mistake: every problem is
collected with its file, line and key path, so an operator fixes them all in one
edit, and a failed load raises ``ConfigError`` without touching the running config.

The package: ``model``/``model_upstream`` (the frozen objects runtime code imports,
re-exported here), ``yamlload`` (YAML with lines, merge keys, syntax hints), ``node``
(walking the document, ``${VAR}``), ``spec_*`` (the pydantic models of each section: they
parse it, with ``Wording`` for messages that explain, and are the JSON Schema and the
reference), ``schema`` (pydantic errors as problems; ``gateway schema``), ``refdoc``,
``sections_*`` (each section through its model, then the checks that span keys and sections), ``load`` (the
whole file and its cross-route checks). Config imports no runtime code: names both
sides use live in ``names`` and ``pagination_keys``.
"""

from __future__ import annotations

from gateway.config.errors import ConfigError, Problem
from gateway.config.load import load_config, parse_config
from gateway.config.model import (
    DEFAULT_FALLBACK_ON,
    SHAPE_TYPES,
    AccessSpec,
    BodySpec,
    CacheSettings,
    ClientKey,
    Config,
    FieldExpr,
    KeepOtherFields,
    Pagination,
    ParamSpec,
    ParamType,
    PathTemplate,
    ProbeSample,
    ProbeSettings,
    ProbeSpec,
    RateLimit,
    ResponseSpec,
    Route,
    RouteCache,
    ServerSettings,
    ShapeSpec,
    Target,
    Template,
)
from gateway.config.model_upstream import (
    METHODS,
    AuthSpec,
    BreakerPolicy,
    ExpirySpec,
    RequestBudget,
    RetryPolicy,
    Secret,
    SecretSource,
    SessionCheck,
    Timeouts,
    Upstream,
)
from gateway.config.values import parse_duration, parse_path, parse_rate, parse_ratio, parse_size, parse_template
from gateway.config.yamlload import LocatedDict, LocatedList

__all__ = [
    "DEFAULT_FALLBACK_ON",
    "METHODS",
    "SHAPE_TYPES",
    "AccessSpec",
    "AuthSpec",
    "BodySpec",
    "BreakerPolicy",
    "CacheSettings",
    "ClientKey",
    "Config",
    "ConfigError",
    "ExpirySpec",
    "FieldExpr",
    "KeepOtherFields",
    "LocatedDict",
    "LocatedList",
    "Pagination",
    "ParamSpec",
    "ParamType",
    "PathTemplate",
    "ProbeSample",
    "ProbeSettings",
    "ProbeSpec",
    "Problem",
    "RateLimit",
    "RequestBudget",
    "ResponseSpec",
    "RetryPolicy",
    "Route",
    "RouteCache",
    "Secret",
    "SecretSource",
    "ServerSettings",
    "SessionCheck",
    "ShapeSpec",
    "Target",
    "Template",
    "Timeouts",
    "Upstream",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_path",
    "parse_rate",
    "parse_ratio",
    "parse_size",
    "parse_template",
]
