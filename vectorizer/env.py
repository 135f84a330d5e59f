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


def positive_number(
    name: str, environ: Mapping[str, str] | None = None, unit: str = ""
) -> float | None:
    """`name`'s value as a positive finite number; None when unset or invalid (logged)."""
    raw = (os.environ if environ is None else environ).get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if math.isfinite(value) and value > 0:
        return value
    log.warning("ignoring %s=%r: expected a positive number%s", name, raw, unit)
    return None


def positive_int(names: Sequence[str], environ: Mapping[str, str] | None = None) -> int | None:
    """The first of `names` set to a positive whole number; None when none is (invalid ones
    are logged). Several names let our variable and pgai's spelling of it both work."""
    env = os.environ if environ is None else environ
    for name in names:
        raw = env.get(name, "").strip()
        if not raw:
            continue
        if raw.isdigit() and int(raw) >= 1:
            return int(raw)
        log.warning("ignoring %s=%r: expected a positive whole number", name, raw)
    return None
