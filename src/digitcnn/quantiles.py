"""np.percentile's and np.median's answers, bit for bit, at a fraction of their cost on the small arrays one image
gives: for a 140x140 image numpy spends most of each call in Python argument handling (about 50 µs of the 85),
and reading one image takes several. A leaf: it imports nothing of ours.

Each function partitions as numpy does and interpolates with numpy's own formula (`_lerp` in
numpy/lib/_function_base_impl.py, the default "linear" method), so the answers are the same values, not close
ones; arrays holding NaN, and empty ones, are handed to numpy itself, so those answers are numpy's too.
"""

import numpy as np


def percentile(values: np.ndarray, q, axis: int | None = None):
    """`np.percentile(values, q, axis=axis)` for q a float, or a tuple of floats, in [0, 100], and axis None
    (the array flattened) or the last axis."""
    values = np.asarray(values)
    lined = values.ravel() if axis is None else values
    if axis not in (None, -1, values.ndim - 1) or lined.shape[-1] == 0:
        return np.percentile(values, q, axis=axis)
    count = lined.shape[-1]
    weak = type(q) in (int, float)  # numpy's rule: a Python number keeps the array's precision
    virtual = (count - 1) * np.true_divide(q, 100)
    previous = np.floor(virtual).astype(np.intp)
    following = np.where(virtual >= count - 1, count - 1, previous + 1)
    previous = np.where(virtual >= count - 1, count - 1, previous)
    # The last place too: a NaN sorts there, and then numpy's answer is NaN.
    part = np.partition(lined, np.unique(np.concatenate([np.ravel(previous), np.ravel(following), [count - 1]])))
    if np.isnan(part[..., -1]).any():
        return np.percentile(values, q, axis=axis)
    gamma = np.asarray(virtual - previous, dtype=np.float64)
    low, high = part[..., previous], part[..., following]
    if weak:
        return lerp(low, high, float(gamma))
    if part.ndim > 1:  # numpy puts the percentiles first, the rows after
        low, high = np.moveaxis(low, -1, 0), np.moveaxis(high, -1, 0)
    gamma = gamma.reshape(gamma.shape + (1,) * (part.ndim - 1))
    return lerp(low, high, gamma)


def sparse_percentile(values: np.ndarray, q: float):
    """`np.percentile(values, q)` of an array with no negative values, most of them 0 (an ink map), for a high q:
    the zeros are counted rather than sorted, and only the rest is partitioned."""
    flat = np.asarray(values).ravel()
    rest = flat[flat != 0]  # a NaN stays in, and hands the answer to numpy
    zeros, count = flat.size - rest.size, flat.size
    virtual = (count - 1) * np.true_divide(q, 100)
    previous = int(np.floor(virtual)) if virtual < count - 1 else count - 1
    following = min(previous + 1, count - 1)
    if count == 0 or previous < zeros:  # the answer touches the zeros: rare for a high q, so the general way
        return percentile(values, q)
    part = np.partition(rest, sorted({previous - zeros, following - zeros, rest.size - 1}))
    if np.isnan(part[-1]):
        return np.percentile(values, q)
    return lerp(part[previous - zeros], part[following - zeros], float(virtual - previous))


def lerp(low, high, gamma):
    """numpy's `_lerp`, as np.percentile interpolates: from the nearer end, so a weight of 0 or 1 is exact."""
    difference = high - low
    result = np.add(low, difference * gamma, out=...)
    np.subtract(high, difference * (1 - gamma), out=result, where=gamma >= 0.5, casting="unsafe", dtype=result.dtype)
    return result[()] if result.ndim == 0 else result


def median(values: np.ndarray):
    """`np.median(values)` of a float array: the middle value, or the mean of the two middle ones."""
    values = np.asarray(values).ravel()
    count = len(values)
    if count == 0 or values.dtype.kind != "f":
        return np.median(values)
    half = count // 2
    part = np.partition(values, [half - 1, half, count - 1] if count % 2 == 0 else [half, count - 1])
    if np.isnan(part[-1]):
        return np.median(values)
    if count % 2:
        return part[half]
    return (part[half - 1] + part[half]) / 2  # as np.mean of the two: their sum, then halved, in their own dtype


def median_above(values: np.ndarray, level: float) -> bool:
    """`np.median(values) > level` of a float array, mostly by counting: the median is above the level when more
    than half the values are, and not when fewer are; only a tie between the two middle values needs them."""
    values = np.asarray(values)
    above = int(np.count_nonzero(values > level))
    at_or_below = int(np.count_nonzero(values <= level))
    count = values.size
    if above + at_or_below != count:  # NaNs, neither above nor below: numpy's median is NaN, never above
        return False
    if count == 0:
        return bool(np.median(values) > level)
    needed = count - count // 2  # values above the level that put the middle one (or both middle ones) above it
    if count % 2 or above != count // 2:
        return above >= needed
    return bool(median(values) > level)  # the two middle values straddle the level: their mean decides
