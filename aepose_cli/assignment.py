"""Assignment solver that reproduces munkres 1.1.4 tie for tie, many times faster.

Why this exists: the reference groups keypoints with ``Munkres().compute(C)`` from munkres 1.x
on cost matrices ``100 * round(D) - val`` whose rounded distances tie all the time. Any optimal
solver finds *an* optimal assignment, but only munkres 1.x's exact scan orders pick the same one
among ties (munkres 3.0 and scipy disagree on ~40 % of such matrices). munkres 1.x itself is
pure Python and O(n^3) interpreted steps, far too slow for crowded frames, so this module
re-implements the same algorithm with the same observable decisions:

* pad to a square n x n with zeros (rows or columns), as ``Munkres.pad_matrix`` does;
* step 1 subtracts each row's minimum in place (float64, same rounding);
* step 2 stars, row by row, the first zero whose column has no star yet;
* step 4 searches uncovered zeros by scanning rows cyclically from the last position and,
  within the first row that has one, keeps the *last* hit of the cyclic column scan that starts
  at the previous column (the munkres 1.x quirk that decides most ties);
* step 5 builds the star/prime path (each row and column holds at most one star, each row at
  most one prime, so "first star in column" / "first prime in row" are plain look-ups);
* step 6 adds the smallest uncovered value to covered rows first and subtracts it from
  uncovered columns second, element by element, so float results and the exact-zero tests
  that follow are bit-identical;
* the result lists the stars inside the original rows and columns, row-major.

Speed comes from two things. The bookkeeping (stars, primes, covers, "where are the uncovered
zeros") uses Python ints as column bitsets, so step 4's cyclic "last zero" scan is a couple of
bit operations per row instead of an interpreted loop over n columns. The float work (steps 1
and 6) is whole-matrix numpy arithmetic for large matrices and plain Python floats for small
ones, where numpy's per-call overhead would cost more than the arithmetic; both are IEEE
float64 with the same operations in the same order, so they give identical bits.

munkres looks for the smallest uncovered value starting from the sentinel ``sys.maxsize``; the
sentinel can only survive if every uncovered value is >= 2**63, which would make munkres mix
Python ints into the float arithmetic. Such matrices are rejected instead of imitated.
"""
from __future__ import annotations

import sys

import numpy as np

_SENTINEL = float(sys.maxsize)  # munkres' initial "smallest uncovered value" (2**63 as float)
_LIST_MAX_SIZE = 14  # up to this n, Python float lists beat numpy's per-call overhead (measured)


def solve_assignment(cost: np.ndarray) -> np.ndarray:
    """Return munkres 1.1.4's ``(row, col)`` pairs for ``cost`` as an int64 array ``[n_pairs, 2]``.

    ``cost`` is any rectangular matrix of finite numbers (the reference passes float64, possibly
    already widened to square with 1e10 columns). Arithmetic is done in float64 on a private
    copy: unlike munkres, the caller's array is never modified. Pairs come in row order and only
    refer to the caller's rows and columns (munkres' zero padding never appears). An empty matrix
    gives no pairs (munkres itself would raise IndexError on zero rows).
    """
    matrix = np.asarray(cost, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"cost matrix must be 2-D, got shape {matrix.shape}")
    n_rows, n_cols = matrix.shape
    if n_rows == 0 or n_cols == 0:
        return np.empty((0, 2), dtype=np.int64)
    if not np.isfinite(matrix).all():
        raise ValueError("cost matrix contains NaN or infinite values")
    size = max(n_rows, n_cols)
    square = _ListCost(matrix, size) if size <= _LIST_MAX_SIZE else _NumpyCost(matrix, size)
    star_col_of_row = _MunkresRun(square).solve()
    pairs = [(row, col) for row, col in enumerate(star_col_of_row[:n_rows]) if col < n_cols]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def _lowest_bit(bits: int) -> int:
    """Index of the lowest set bit (``bits`` must be non-zero)."""
    return (bits & -bits).bit_length() - 1


def _check_below_sentinel(smallest: float) -> None:
    """munkres' minimum search starts from the int ``sys.maxsize``; if no uncovered value is
    below it, munkres would add that int to the matrix. Never happens for real costs; refuse."""
    if not smallest < _SENTINEL:
        raise ValueError("cost values too large: munkres' sys.maxsize sentinel would leak into its arithmetic")


def _mask_rows_as_bitsets(mask: np.ndarray) -> list[int]:
    """Each row of a boolean matrix as an int whose bit j is ``mask[row, j]``."""
    packed = np.packbits(mask, axis=1, bitorder="little")
    n_rows, width = packed.shape
    if width <= 8:  # one little-endian uint64 per row: numpy hands back Python ints directly
        words = np.zeros((n_rows, 8), dtype=np.uint8)
        words[:, :width] = packed
        return words.view("<u8").ravel().tolist()
    raw = packed.tobytes()
    return [int.from_bytes(raw[start : start + width], "little") for start in range(0, len(raw), width)]


def _bitset_as_mask(bits: int, size: int) -> np.ndarray:
    """Boolean vector of length ``size`` whose entry j is bit j of ``bits``."""
    raw = np.frombuffer(bits.to_bytes((size + 7) // 8, "little"), dtype=np.uint8)
    return np.unpackbits(raw, count=size, bitorder="little").view(bool)


class _ListCost:
    """munkres' working matrix as lists of Python floats; cheapest for small n."""

    def __init__(self, matrix: np.ndarray, size: int) -> None:
        """Zero-pad to ``size`` x ``size`` (``Munkres.pad_matrix``), then step 1: subtract
        each row's minimum (padding included) from the row."""
        rows = matrix.tolist()
        for row in rows:
            row.extend([0.0] * (size - len(row)))
        rows.extend([[0.0] * size for _ in range(size - len(rows))])
        for row in rows:
            smallest = min(row)
            if smallest != 0:
                row[:] = [value - smallest for value in row]  # a zero minimum could only flip a zero's sign
        self.rows = rows
        self.size = size

    def zero_bitsets(self) -> tuple[list[int], list[int]]:
        """The exact zeros as bitsets, by row (bit = column) and by column (bit = row)."""
        by_row = []
        by_col = [0] * self.size
        for row_index, row in enumerate(self.rows):
            row_bit = 1 << row_index
            bits = 0
            for col, value in enumerate(row):
                if value == 0:
                    bits |= 1 << col
                    by_col[col] |= row_bit
            by_row.append(bits)
        return by_row, by_col

    def shift_by_smallest_uncovered(self, covered_rows: int, uncovered_cols: int) -> None:
        """Step 6, element order as munkres: covered rows ``+= m`` before uncovered columns
        ``-= m`` (``(c + m) - m`` is not always ``c`` in floating point)."""
        cols = [col for col in range(self.size) if uncovered_cols >> col & 1]
        covered = [covered_rows >> row & 1 for row in range(self.size)]
        smallest = min(
            min([row[col] for col in cols]) for row, is_covered in zip(self.rows, covered) if not is_covered
        )
        _check_below_sentinel(smallest)
        for row, is_covered in zip(self.rows, covered):
            if is_covered:
                row[:] = [value + smallest for value in row]
            for col in cols:
                row[col] -= smallest


class _NumpyCost:
    """munkres' working matrix as a float64 array; whole-matrix arithmetic for larger n."""

    def __init__(self, matrix: np.ndarray, size: int) -> None:
        """Zero-pad to ``size`` x ``size`` (``Munkres.pad_matrix``), then step 1."""
        values = np.zeros((size, size), dtype=np.float64)
        values[: matrix.shape[0], : matrix.shape[1]] = matrix
        values -= values.min(axis=1, keepdims=True)
        self.values = values
        self.size = size

    def zero_bitsets(self) -> tuple[list[int], list[int]]:
        """The exact zeros as bitsets, by row (bit = column) and by column (bit = row)."""
        is_zero = self.values == 0
        return _mask_rows_as_bitsets(is_zero), _mask_rows_as_bitsets(is_zero.T)

    def shift_by_smallest_uncovered(self, covered_rows: int, uncovered_cols: int) -> None:
        """Step 6, element order as munkres: covered rows ``+= m`` before uncovered columns
        ``-= m`` (``(c + m) - m`` is not always ``c`` in floating point)."""
        rows = _bitset_as_mask(covered_rows, self.size)
        cols = _bitset_as_mask(uncovered_cols, self.size)
        smallest = self.values[~rows][:, cols].min()
        _check_below_sentinel(smallest)
        self.values[rows] += smallest
        self.values[:, cols] -= smallest


class _MunkresRun:
    """One solve of a square matrix: munkres' ``marked`` matrix and cover lists, re-encoded.

    munkres keeps marks in an n x n matrix, but at any time a row or column holds at most one
    star and a row at most one prime, so one index per row / column says the same thing and
    turns its "first star in row/column" and "first prime in row" scans into look-ups. Zeros,
    covers and "uncovered rows that still hold an uncovered zero" are bitsets, so step 4's scan
    is a few bit operations.
    """

    def __init__(self, cost: _ListCost | _NumpyCost) -> None:
        self.cost = cost  # already padded and row-reduced (steps 0 and 1)
        self.size = cost.size
        self.all_lines = (1 << self.size) - 1
        self.zero_cols_of_row, self.zero_rows_of_col = cost.zero_bitsets()
        self.star_col_of_row = [-1] * self.size
        self.star_row_of_col = [-1] * self.size
        self.prime_col_of_row = [-1] * self.size
        self.covered_rows = 0
        self.uncovered_cols = self.all_lines
        self.rows_with_uncovered_zero = 0

    def solve(self) -> list[int]:
        """Steps 2-6 until every column holds a star; return each row's star column."""
        self._star_first_free_zeros()  # step 2
        while self._cover_starred_columns():  # step 3
            primed = self._prime_until_augmentable()  # steps 4 and 6
            self._augment_along_path(*primed)  # step 5
        return self.star_col_of_row

    def _star_first_free_zeros(self) -> None:
        """Step 2: row by row, star the leftmost zero whose column has no star yet."""
        free_cols = self.all_lines
        for row, zero_cols in enumerate(self.zero_cols_of_row):
            candidates = zero_cols & free_cols
            if candidates:
                col = _lowest_bit(candidates)
                self.star_col_of_row[row] = col
                self.star_row_of_col[col] = row
                free_cols &= ~(1 << col)

    def _cover_starred_columns(self) -> bool:
        """Step 3: cover the starred columns; True while some column is still uncovered."""
        starred = 0
        for col, row in enumerate(self.star_row_of_col):
            if row >= 0:
                starred |= 1 << col
        self.uncovered_cols = self.all_lines & ~starred
        return self.uncovered_cols != 0

    def _prime_until_augmentable(self) -> tuple[int, int]:
        """Steps 4 and 6: prime uncovered zeros until one has no star in its row; return it.

        Covers and primes persist across step 6, and each new step 4 restarts its scan at
        (0, 0), as munkres' ``__step4`` does with its fresh local ``row = col = 0``.
        """
        self._collect_rows_with_uncovered_zero()
        start_row, start_col = 0, 0
        while True:
            found = self._find_uncovered_zero(start_row, start_col)
            if found is None:
                self.cost.shift_by_smallest_uncovered(self.covered_rows, self.uncovered_cols)  # step 6
                self.zero_cols_of_row, self.zero_rows_of_col = self.cost.zero_bitsets()
                self._collect_rows_with_uncovered_zero()
                start_row, start_col = 0, 0
                continue
            row, col = found
            self.prime_col_of_row[row] = col
            star_col = self.star_col_of_row[row]
            if star_col < 0:
                return row, col
            self.covered_rows |= 1 << row
            self.uncovered_cols |= 1 << star_col
            self.rows_with_uncovered_zero &= ~(1 << row)
            self.rows_with_uncovered_zero |= self.zero_rows_of_col[star_col] & ~self.covered_rows
            start_row, start_col = row, star_col

    def _collect_rows_with_uncovered_zero(self) -> None:
        """Recompute which uncovered rows hold a zero in an uncovered column."""
        rows = 0
        for row, zero_cols in enumerate(self.zero_cols_of_row):
            if zero_cols & self.uncovered_cols:
                rows |= 1 << row
        self.rows_with_uncovered_zero = rows & ~self.covered_rows

    def _find_uncovered_zero(self, start_row: int, start_col: int) -> tuple[int, int] | None:
        """munkres 1.x ``__find_a_zero``: rows cyclically from ``start_row``; in the first row
        with an uncovered zero, the *last* one met by a full cyclic column scan from
        ``start_col``. That scan visits ``start_col .. n-1`` then ``0 .. start_col-1``, so its
        last hit is the highest hit left of ``start_col`` if any, else the highest hit."""
        candidate_rows = self.rows_with_uncovered_zero
        if not candidate_rows:
            return None
        from_start = candidate_rows >> start_row
        row = start_row + _lowest_bit(from_start) if from_start else _lowest_bit(candidate_rows)
        hits = self.zero_cols_of_row[row] & self.uncovered_cols
        wrapped = hits & ((1 << start_col) - 1)
        return row, (wrapped or hits).bit_length() - 1

    def _augment_along_path(self, row: int, col: int) -> None:
        """Step 5: from the primed zero, alternate star-in-column / prime-in-row; star the
        path's primes, unstar its stars, then clear all covers and primes."""
        path_primes = [(row, col)]
        path_stars = []
        while (star_row := self.star_row_of_col[col]) >= 0:
            path_stars.append((star_row, col))
            col = self.prime_col_of_row[star_row]
            path_primes.append((star_row, col))
        for star_row, star_col in path_stars:
            self.star_col_of_row[star_row] = -1
            self.star_row_of_col[star_col] = -1
        for prime_row, prime_col in path_primes:
            self.star_col_of_row[prime_row] = prime_col
            self.star_row_of_col[prime_col] = prime_row
        self.prime_col_of_row = [-1] * self.size
        self.covered_rows = 0
