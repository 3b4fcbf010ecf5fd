"""Value types of the routes.yaml models (pydantic v2): each parses like ``gateway check`` and documents itself.

A duration, size, share or rate is parsed by the same function everywhere, so its error message is
the same; its JSON Schema tells an editor what to write. ``Wording`` and the by-kind unions make the
models' messages as explicit as the hand-written parsers' were.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetJsonSchemaHandler,
    Tag,
    WithJsonSchema,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic.json_schema import JsonSchemaValue

from gateway.config.values import parse_duration, parse_rate, parse_ratio, parse_size

_DURATION_SCHEMA = {
    "anyOf": [{"type": "string", "pattern": r"^\s*(\d+(\.\d+)?\s*(ms|s|m|h|d)\s*)+$"}, {"const": 0}],
    "examples": ["250ms", "5s", "1h30m"],
}
_SIZE_SCHEMA = {
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": r"^\s*\d+\s*([bB]|[kKmMgG][iI]?[bB])?\s*$"},
    ],
    "examples": ["1MiB", "512kb", 65536],
}

#: ``5s``, ``250ms``, ``1h30m``; a bare number only for 0
Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(_DURATION_SCHEMA)]
#: bytes, or ``512kb``, ``1MiB``
Size = Annotated[int, BeforeValidator(parse_size), WithJsonSchema(_SIZE_SCHEMA)]
#: ``20%`` or ``0.2``
Ratio = Annotated[
    float,
    BeforeValidator(parse_ratio),
    WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0, "maximum": 1}, {"type": "string", "pattern": "%$"}]}),
]
#: ``480/1m``, ``4800/1h``, ``10/s``
Rate = Annotated[
    tuple[int, float],
    BeforeValidator(parse_rate),
    WithJsonSchema({"type": "string", "pattern": r"^\s*\d+\s*/", "examples": ["480/1m", "10/s"]}),
]


@dataclass(frozen=True)
class Wording:
    """What a mistaken value is told, in place of pydantic's generic words (gateway.config.schema reads it).

    Put in a field's or a type's ``Annotated[...]``: the innermost one on an error's path speaks. ``expected``
    says what to write; ``choices`` gives each allowed word its meaning ("'follow' (fetch the final target)
    or 'report' (...)"), which "Input should be 'follow' or 'report'" would lose; ``secret`` says nothing
    of what was written, not even a number, since a secret pasted in by mistake must never be echoed."""

    expected: str = ""
    choices: Mapping[str, str] = field(default_factory=dict)
    secret: bool = False

    def __hash__(self) -> int:  # typing.Annotated hashes its metadata
        return hash((self.expected, tuple(self.choices.items()), self.secret))

    def __get_pydantic_json_schema__(self, core: Any, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """Editors show each choice's meaning beside it (``enumDescriptions``, read by VS Code's YAML)."""
        schema = handler(core)
        if self.choices:
            for node in (schema, *schema.get("anyOf", ())):
                if node.get("enum") == list(self.choices):
                    node["enumDescriptions"] = list(self.choices.values())
        return schema

    def text(self) -> str:
        if not self.choices:
            return self.expected
        said = [f"{word!r} ({meaning})" for word, meaning in self.choices.items()]
        return ", ".join(said[:-1]) + f" or {said[-1]}" if len(said) > 1 else said[0]


def yaml_kind(value: Any) -> str:
    """The branch of a by-kind union a value is read by: a word, a mapping or a list each has its own type,
    so a mistake is reported once, by the branch the value was meant for (not once per branch)."""
    return "mapping" if isinstance(value, dict) else "list" if isinstance(value, list) else "scalar"


#: the discriminator of a union whose branches are tagged ``scalar``, ``mapping``, ``list``
BY_KIND = Discriminator(yaml_kind)
SCALAR, MAPPING, LIST = Tag("scalar"), Tag("mapping"), Tag("list")

HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class _Null:
    """A key written without a value (``key:``, ``key: null``) where null means nothing: the field's own
    type refuses it, at its key.  Leaving a key out is how its default is asked for; a list commented
    out under ``methods:`` must not read as "no restriction"."""

    __slots__ = ()


_NULL = _Null()


def _nullable(field: FieldInfo) -> bool:
    """A field where ``null`` is a value of its own (``json_schema_extra={"nullable": True}``)."""
    extra = field.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("nullable"))


class Section(BaseModel):
    """A routes.yaml mapping: unknown keys are mistakes, a string is never read as a number, and a key
    written as ``null`` is not taken for one left out."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, use_attribute_docstrings=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_not_absent(cls, data: Any) -> Any:
        if not isinstance(data, dict) or None not in data.values():
            return data
        fields = {(f.alias or name): f for name, f in cls.model_fields.items()}
        return {
            k: _NULL if v is None and k in fields and not _nullable(fields[k]) else v for k, v in data.items()
        }


_NEVER_INLINE = "secrets are never written in routes.yaml"


class SecretSourceSpec(Section):
    """Where a secret comes from; exactly one of ``env``, ``file`` or ``file_env``. Secrets are never inline."""

    env: str | None = None
    """An environment variable holding the secret."""
    file: str | None = None
    """A file holding the secret (a mounted Kubernetes/Docker secret)."""
    file_env: str | None = None
    """An environment variable naming the file that holds the secret."""
    json_key: str | None = None
    """With ``file``/``file_env``: the file is JSON and the secret is this key of it."""

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if len(self.model_fields_set & {"env", "file", "file_env"}) != 1:
            raise ValueError(
                f"a secret needs exactly one of 'env: VAR', 'file: PATH' or 'file_env: VAR' ({_NEVER_INLINE})"
            )
        if self.env is not None and self.json_key is not None:
            raise ValueError("'json_key' goes with 'file' or 'file_env'")
        return self


#: one source, or a list of alternatives tried in order at request time; its mistakes never echo what was written
_SECRET = Wording(f"{{env: VAR}}, {{file: PATH}} or {{file_env: VAR}}; {_NEVER_INLINE}", secret=True)
SecretRef = Annotated[
    Annotated[SecretSourceSpec, MAPPING]
    | Annotated[list[Annotated[SecretSourceSpec, _SECRET]], Field(min_length=1), LIST],
    BY_KIND,
    _SECRET,
    Field(description="A secret: {env: VAR}, {file: PATH} or {file_env: VAR}, or a list of them tried in order."),
]


#: any YAML value (a constant body, a param's default): what it must be depends on other keys
Free = Any
