"""The hashed hold-out: whether a record is held out depends on that record alone (and a public salt).

Used by the loaders (``--holdout``), the table readers and :meth:`mmgen.data.Dataset.validation_split`.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..errors import DataError

__all__ = ["HOLDOUT_SALT", "holdout_mask"]

HOLDOUT_SALT = b"mmgen-holdout-v1"  # public salt of the per-record hashed hold-out


def holdout_mask(x: np.ndarray, y: np.ndarray, fraction: float, salt: bytes = HOLDOUT_SALT) -> np.ndarray:
    """Which records go to the hold-out side: a keyed hash of each record's own bytes, nothing else.

    Record i is held out when ``SHA-256(salt ‖ x_i ‖ y_i)``, read as a number in
    [0, 1), is below ``fraction``. A record's side depends only on that record
    (and the public salt), never on N or on the other records, so adding or
    removing one record changes the released side by at most that record.

    Args:
        x ((N, ...) ndarray): records, as stored in the file.
        y ((N,) ndarray): labels.
        fraction: expected share of records held out, in (0, 1).
        salt: public salt.

    Returns:
        (N,) bool ndarray, True for held-out records.

    Example:
        >>> import numpy as np
        >>> x = np.arange(12, dtype=np.float32).reshape(6, 2)
        >>> m = holdout_mask(x, np.zeros(6, dtype=np.int64), 0.5)
        >>> bool((holdout_mask(x[::-1], np.zeros(6, dtype=np.int64), 0.5)[::-1] == m).all())  # order-free
        True
    """
    if not (isinstance(fraction, (int, float)) and 0 < fraction < 1):
        raise DataError(f"`holdout` must be a fraction in (0, 1). Got {fraction!r}.")
    x = np.ascontiguousarray(x)
    y = np.ascontiguousarray(y.astype(np.int64))
    cut = int(fraction * 2**64)
    out = np.empty(len(x), dtype=bool)
    for i in range(len(x)):
        digest = hashlib.sha256(salt + x[i].tobytes() + y[i].tobytes()).digest()
        out[i] = int.from_bytes(digest[:8], "big") < cut
    return out
