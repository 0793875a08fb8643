"""Overlap of binary masks."""

from __future__ import annotations

import numpy as np

from sirtreg.errors import InputError


def dice(mask_a: np.ndarray, mask_b: np.ndarray) -> float:
    """Dice similarity coefficient 2|A∩B| / (|A| + |B|) of two boolean arrays of equal shape.

    Both masks must be on the same grid; two empty masks are refused (DSC undefined).
    """
    a = np.asarray(mask_a, dtype=bool)
    b = np.asarray(mask_b, dtype=bool)
    if a.shape != b.shape:
        raise InputError(f"masks differ in shape: {a.shape} vs {b.shape}; resample onto one grid first")
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    if total == 0:
        raise InputError("both masks are empty: the Dice coefficient is undefined")
    return 2.0 * float(np.count_nonzero(a & b)) / total
