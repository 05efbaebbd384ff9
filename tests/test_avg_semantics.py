"""op="avg" (alias "mean") on integers: the sum divided by the world size,
rounded to nearest with ties away from zero (not truncated); floats: one IEEE
division of the sum."""

import numpy as np
import pytest

from local_group import close_all, make_group, run_all


@pytest.mark.timeout(60)
@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint64])
def test_integer_avg_rounds_to_nearest_ties_away_from_zero(dtype):
    signed = np.dtype(dtype).kind == "i"
    # Columns (per peer): sums 7, 8, 1, 2, 0 over 2 peers -> 3.5, 4, 0.5, 1, 0; negatives when signed.
    two = [np.array([3, 4, 0, 1, 0] + ([-3, -4, -1] if signed else [1, 2, 1]), dtype),
           np.array([4, 4, 1, 1, 0] + ([-4, -5, 0] if signed else [0, 3, 2]), dtype)]
    want2 = [4, 4, 1, 1, 0] + ([-4, -5, -1] if signed else [1, 3, 2])  # 3.5->4 0.5->1 -3.5->-4 -4.5->-5 -0.5->-1
    three = [np.array([1, 2, 4, 5], dtype), np.array([0, 0, 0, 0], dtype), np.array([0, 0, 0, 0], dtype)]
    want3 = [0, 1, 1, 2]  # 1/3 -> 0, 2/3 -> 1, 4/3 -> 1, 5/3 -> 2 (truncation would give 0, 0, 1, 1)
    for xs, want, op in ((two, want2, "avg"), (three, want3, "mean")):
        comms = make_group(len(xs), key=f"avg-{np.dtype(dtype).name}", timeout=5.0)
        try:
            res = run_all(comms, lambda c, x: c.all_reduce(x, op=op), xs)
            assert not any(isinstance(r, Exception) for r in res), res
            for x in xs:
                assert x.tolist() == want, (x.tolist(), want)
        finally:
            close_all(comms)


def test_float_avg_and_mean_are_one_division_of_the_sum():
    comms = make_group(3, key="avg-f32", timeout=5.0)
    try:
        xs = [np.array([1.0, 2.0, 0.1], np.float32) * (i + 1) for i in range(3)]
        ys = [x.copy() for x in xs]
        run_all(comms, lambda c, x: c.all_reduce(x, op="avg"), xs)
        run_all(comms, lambda c, y: c.all_reduce(y, op="mean"), ys)
        assert xs[0].tolist() == ys[0].tolist() == xs[2].tolist()
        assert xs[0][0] == np.float32(2.0) and xs[0][1] == np.float32(4.0)
    finally:
        close_all(comms)
