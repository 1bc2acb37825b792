"""quantiles, and otsu_threshold's zero-counting histogram: the same values as numpy's or as before, bit for bit
(not merely close), on arrays shaped and valued as an image's give them, ties, NaN and empty ones included."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from digitcnn.preprocess import otsu_threshold
from digitcnn.quantiles import median, median_above, percentile, sparse_percentile

# Values as images give them: a few distinct levels make ties and equal middles common, as paper does.
levels = st.sampled_from([0.0, 0.25, 0.5, 0.5000001, 0.75, 1.0]) | st.floats(0, 1, width=32)
float_arrays = st.sampled_from([np.float32, np.float64]).flatmap(
    lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=40), elements=levels)
)
percents = st.sampled_from([0.0, 10.0, 25.0, 50.0, 99.99, 100.0]) | st.floats(0, 100)


def same(ours, numpys) -> bool:
    ours, numpys = np.asarray(ours), np.asarray(numpys)
    return ours.dtype == numpys.dtype and ours.shape == numpys.shape and np.array_equal(ours, numpys, equal_nan=True)


@settings(max_examples=300, deadline=None)
@given(values=float_arrays, q=percents)
def test_percentile_of_a_flattened_array_is_numpys(values, q):
    assert same(percentile(values, q), np.percentile(values, q))


@settings(max_examples=200, deadline=None)
@given(values=float_arrays, q=percents)
def test_percentile_along_the_last_axis_is_numpys(values, q):
    assert same(percentile(values, q, axis=-1), np.percentile(values, q, axis=-1))


@settings(max_examples=200, deadline=None)
@given(values=float_arrays, first=percents, second=percents)
def test_percentiles_of_a_tuple_are_numpys(values, first, second):
    assert same(percentile(values, (first, second)), np.percentile(values, (first, second)))


@settings(max_examples=300, deadline=None)
@given(values=float_arrays)
def test_median_is_numpys(values):
    assert same(median(values), np.median(values))


@settings(max_examples=300, deadline=None)
@given(values=float_arrays, level=st.sampled_from([0.5, 0.25]) | st.floats(0, 1))
def test_median_above_is_numpys_comparison(values, level):
    assert median_above(values, level) == bool(np.median(values) > level)


def test_nan_and_empty_arrays_get_numpys_answers():
    with_nan = np.array([0.1, np.nan, 0.7, 0.2], np.float32)
    assert np.isnan(percentile(with_nan, 10.0)) and np.isnan(median(with_nan))
    assert not median_above(np.full(5, np.nan, np.float32), 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's own "mean of empty slice"
        assert np.isnan(median(np.zeros(0, np.float32)))
    with pytest.raises(IndexError):  # numpy's own error for the percentile of nothing
        np.percentile(np.zeros(0, np.float32), 10.0)
    with pytest.raises(IndexError):
        percentile(np.zeros(0, np.float32), 10.0)


# Ink maps: no negative values, most of them 0, as ink_map and the crops cut from it give them.
ink_maps = st.sampled_from([np.float32, np.float64]).flatmap(
    lambda dtype: hnp.arrays(
        dtype,
        hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=60),
        elements=st.sampled_from([0.0, 0.0, 0.0, 1.0]) | st.floats(0, 1, width=32),
    )
)


@settings(max_examples=300, deadline=None)
@given(values=ink_maps, q=st.sampled_from([99.99, 99.0, 90.0, 50.0, 100.0]) | st.floats(0, 100))
def test_sparse_percentile_is_numpys(values, q):
    assert same(sparse_percentile(values, q), np.percentile(values, q))


def reference_otsu(values: np.ndarray) -> float:
    """otsu_threshold as first written: every value binned, the zeros too."""
    values = np.asarray(values)
    count = values.size
    if count and (values.min() < 0 or values.max() > 1):
        values = values[(values >= 0) & (values <= 1)]
    histogram = np.bincount(np.minimum((values.ravel() * 256).astype(np.intp), 255), minlength=256)
    weights = histogram.astype(np.float64) / max(count, 1)
    centres = (np.arange(256) + 0.5) / 256
    below, mean_below = np.cumsum(weights), np.cumsum(weights * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean_below[-1] * below - mean_below) ** 2 / (below * (1 - below))
    return float(centres[int(np.argmax(np.nan_to_num(between)))])


@settings(max_examples=300, deadline=None)
@given(values=ink_maps | float_arrays, shift=st.sampled_from([0.0, 0.0, -0.5, 0.5]))
def test_otsu_threshold_counting_zeros_is_binning_them(values, shift):
    values = values + values.dtype.type(shift)  # some outside [0, 1] too, which both leave out
    assert otsu_threshold(values) == reference_otsu(values)
