"""Formatting: turn a chunk and its source row into the text that is embedded and stored.

`python_template` follows pgai: `string.Template(template).substitute(chunk=chunk, **row)`,
every source column by name, values rendered with `str()` (so NULL reads `None`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from string import Template
from typing import Any

from vectorizer.config import ChunkValue, Formatting, PythonTemplate
from vectorizer.errors import VectorizerError
from vectorizer.registry import Registry

Formatter = Callable[[str, Mapping[str, Any]], str]

# Placeholders a template may use besides the source row's columns.
CHUNK_FIELDS = frozenset({"chunk"})

# Templates that render to the chunk itself; skipping `substitute` for them is pure gain.
_IDENTITY_TEMPLATES = frozenset({"$chunk", "${chunk}"})


def make_formatter(config: Formatting) -> Formatter:
    """The format function for a vectorizer's `formatting` config, reusable across rows."""
    return _FORMATTERS.build(config)


# Per-chunk names a python_template may use besides `$chunk` and the row's columns.
CHUNK_CONTEXT_NAMES = frozenset({"heading", "page"})


def uses_chunk_context(config: Formatting) -> bool:
    """Whether the template names `$heading` or `$page` (so the pipeline must supply them)."""
    if not isinstance(config, PythonTemplate):
        return False
    template = Template(config.template)
    return template.is_valid() and not CHUNK_CONTEXT_NAMES.isdisjoint(template.get_identifiers())


def template_columns(config: Formatting) -> frozenset[str]:
    """The source columns a formatting config reads from each row."""
    if not isinstance(config, PythonTemplate):
        return frozenset()
    template = Template(config.template)
    if not template.is_valid():
        return frozenset()  # make_formatter says what is wrong with it
    # `$heading`/`$page` come from the chunk when the table has no such column
    return frozenset(template.get_identifiers()) - CHUNK_FIELDS - CHUNK_CONTEXT_NAMES


def _chunk_value(config: ChunkValue) -> Formatter:
    return _unchanged


def _unchanged(chunk: str, row: Mapping[str, Any]) -> str:
    return chunk


def _python_template(config: PythonTemplate) -> Formatter:
    if config.template in _IDENTITY_TEMPLATES:
        return _unchanged
    template = Template(config.template)
    # A malformed placeholder fails identically for every row: that is the vectorizer's fault.
    if not template.is_valid():
        raise VectorizerError(
            f"formatting template {config.template!r} has an invalid placeholder "
            "(use $name or ${name}, and $$ for a literal $)",
            step="formatting",
        )
    return _TemplateFormatter(template)


class _TemplateFormatter:
    """Renders a valid template as `Template.substitute(row, chunk=chunk)` does, from parts
    split once: the literal text (`$$` already a `$`) and the names between, so a chunk costs
    a join rather than a regex pass with a callback per placeholder (~3 us per chunk)."""

    __slots__ = ("_literals", "_names")

    def __init__(self, template: Template) -> None:
        self._literals: list[str] = []
        self._names: list[str] = []
        text = template.template
        literal: list[str] = []
        end = 0
        for match in template.pattern.finditer(text):
            literal.append(text[end : match.start()])
            end = match.end()
            if match.group("escaped") is not None:
                literal.append(template.delimiter)
                continue
            self._literals.append("".join(literal))
            self._names.append(match.group("named") or match.group("braced"))
            literal = []
        literal.append(text[end:])
        self._literals.append("".join(literal))

    def __call__(self, chunk: str, row: Mapping[str, Any]) -> str:
        # `chunk` wins over a column of that name (SQL validation forbids one anyway); values
        # render with str(), so NULL reads `None` as in pgai
        literals = self._literals
        parts = [literals[0]]
        try:
            for index, name in enumerate(self._names, start=1):
                parts.append(chunk if name == "chunk" else str(row[name]))
                parts.append(literals[index])
        except KeyError as exc:
            # Every row carries every source column, so this fails alike for all of them.
            name = exc.args[0] if exc.args else "?"
            raise VectorizerError(
                f'template references column "{name}" which the source table does not have',
                step="formatting",
            ) from None
        return "".join(parts)


_FORMATTERS: Registry[Callable[[Any], Formatter]] = Registry(
    "formatting", {ChunkValue: _chunk_value, PythonTemplate: _python_template}
)
