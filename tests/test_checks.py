"""fastmlp._checks: the finiteness test that every input goes through."""
import numpy as np
import pytest

from fastmlp._checks import check_finite


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_value_is_found_and_counted(dtype, bad):
    a = np.ones((50, 7), dtype=dtype)
    a[3, 4] = bad
    a[40, 0] = bad
    with pytest.raises(ValueError, match="X: contains 2 NaN or infinite value"):
        check_finite("X", a)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_value_is_found_when_the_values_must_fit_float32(bad):
    # float64 X for a float32 network: the maximum and minimum find it (no sum taken)
    a = np.ones((50, 7))
    a[3, 4] = bad
    with pytest.raises(ValueError, match="X: contains 1 NaN or infinite value"):
        check_finite("X", a, dtype=np.float32)
    a[3, 4] = -2.0
    check_finite("X", a, dtype=np.float32)


def test_opposite_infinities_are_found():
    # +inf and -inf sum to NaN: still not finite
    a = np.array([1.0, np.inf, -np.inf])
    with pytest.raises(ValueError, match="contains 2 NaN or infinite"):
        check_finite("X", a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_finite_values_whose_sum_overflows_pass(dtype):
    # every value finite, their sum not (float64 1.7e308 twice; float32 values summed in float64 never
    # overflow, so the largest float32 ones stand in): the exact test decides
    big = np.finfo(dtype).max
    a = np.array([big, big, -1.0, big], dtype=dtype)
    check_finite("X", a)
    a[2] = np.nan
    with pytest.raises(ValueError, match="contains 1 NaN"):
        check_finite("X", a)


def test_values_too_large_for_the_network_dtype():
    a = np.array([[1.0, 1e40], [0.0, 2.0]])
    check_finite("X", a)
    with pytest.raises(ValueError, match="too large for float32"):
        check_finite("X", a, dtype=np.float32)
