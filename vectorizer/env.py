"""How a VECTORIZER_* tuning variable is read: blank means unset, and a value that is not a
positive number is logged and ignored (a typo in one setting should not stop the worker).

Read at the moment a setting is needed, not once at import, so a worker started in a new
environment, or a test that sets one, sees the value without reloading anything.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence

log = logging.getLogger(__name__)


def raw(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """`name`'s value, stripped; None when unset or blank."""
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return value or None


def positive_number(
    name: str, environ: Mapping[str, str] | None = None, unit: str = ""
) -> float | None:
    """`name`'s value as a positive finite number; None when unset or invalid (logged)."""
    text = raw(name, environ)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isfinite(value) and value > 0:
        return value
    log.warning("ignoring %s=%r: expected a positive number%s", name, text, unit)
    return None


def positive_int(names: Sequence[str], environ: Mapping[str, str] | None = None) -> int | None:
    """The first of `names` set to a positive whole number; None when none is (invalid ones
    are logged). Several names let our variable and pgai's spelling of it both work."""
    for name in names:
        text = raw(name, environ)
        if text is None:
            continue
        if text.isdigit() and int(text) >= 1:
            return int(text)
        log.warning("ignoring %s=%r: expected a positive whole number", name, text)
    return None


def choice(
    name: str, accepted: Sequence[str], environ: Mapping[str, str] | None = None
) -> str | None:
    """`name`'s value, lowercased, when it is one of `accepted`; None when unset or not (an
    unknown value is logged)."""
    text = raw(name, environ)
    if text is None:
        return None
    if text.lower() in accepted:
        return text.lower()
    log.warning("ignoring %s=%r: expected one of %s", name, text, ", ".join(accepted))
    return None
