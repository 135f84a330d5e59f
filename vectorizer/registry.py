"""One way to choose what serves a config: a registry of config class → factory.

Every pluggable part (loaders, parsers, chunkers, formatters, embedders, writers, reuse
strategies) is registered by the pydantic config class that selects it, one line each. A
factory may be written "module:attribute" so that a heavy module (a provider SDK) is imported
only when a vectorizer uses it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar, get_args

from vectorizer.errors import VectorizerError
from vectorizer.imports import import_module

F = TypeVar("F", bound=Callable[..., Any])


def implementation_of(config_class: type) -> str:
    """The `implementation` value a config class accepts (its Literal's one value)."""
    annotation = config_class.model_fields["implementation"].annotation  # type: ignore[attr-defined]
    (name,) = get_args(annotation)
    return str(name)


class Registry(Generic[F]):
    """The factories of one kind of part, found by the config's `implementation`."""

    def __init__(self, step: str, entries: Mapping[type, F | str]) -> None:
        self._step = step
        self._entries = {implementation_of(cls): factory for cls, factory in entries.items()}

    def lookup(self, config: Any) -> F:
        """The factory for `config`; VectorizerError when this worker has none (a config
        written by a newer version)."""
        implementation = config.implementation
        factory = self._entries.get(implementation)
        if factory is None:
            raise VectorizerError(
                f"{self._step} implementation {implementation!r} is not available in this worker",
                step=self._step,
            )
        if isinstance(factory, str):
            module_name, _, attribute = factory.partition(":")
            factory = getattr(import_module(module_name), attribute)
            self._entries[implementation] = factory
        return factory  # type: ignore[return-value]

    def build(self, config: Any, *args: Any) -> Any:
        return self.lookup(config)(config, *args)
