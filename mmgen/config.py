"""Frozen configuration dataclasses with strict construction from dictionaries.

Every component's configuration (``RFFConfig``, ``TrainConfig``, ...) derives
from :class:`Config`: ``to_dict()`` goes into release metadata and checkpoints,
``from_dict()`` rebuilds it and refuses unknown keys by name.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

__all__ = ["Config"]

C = TypeVar("C", bound="Config")


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of the frozen per-component configurations."""

    def to_dict(self) -> dict[str, Any]:
        """Returns the fields as a JSON-ready dictionary (tuples become lists)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any]) -> C:
        """Builds the configuration from ``values``.

        Raises:
            TypeError: if ``values`` holds a key that is not a field; the message
                names the valid fields.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise TypeError(
                f"{cls.__name__} got unknown option(s) {unknown}. Valid options: {names}."
            )
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in values:
                v = values[f.name]
                kwargs[f.name] = tuple(v) if isinstance(v, list) else v
        return cls(**kwargs)
