"""sin, cos and exp whose bytes are the same on every CPU: built from +, -, *, / and rint alone.

numpy picks its transcendental kernels by CPU at run time (SVML under AVX-512, its own AVX2/FMA3
kernels, else the C library's, which glibc in turn picks by CPU), and they round differently in the
last bit. float32 arctan2 under AVX-512, for one, differs from the AVX2 result in about half of all
inputs. Anything whose bytes must not depend on the machine (the synthetic dataset) computes its
transcendentals here instead. IEEE 754 fixes the result of every operation used below, and numpy
applies each ufunc on its own (no fused multiply-add), so every x86-64 CPU, whatever SIMD it has,
gives the same float64 bits.

Accuracy: a few units in the last place for sin/cos of arguments within a few turns and for exp;
sin(x) and cos(x) of radians lose |x| * 1.1e-16 to the conversion into turns (1e-11 at x = 1e5),
far below anything audible or visible. Inputs and outputs are float64 arrays (scalars give 0-d arrays).
"""

from __future__ import annotations

import math

import numpy as np

TWO_PI = 2 * math.pi
INV_TWO_PI = 1 / TWO_PI
# Taylor coefficients; after the reductions below |x| <= pi/4 (sin, cos) and |r| <= ln(2)/2 (exp),
# where the first omitted term is below 1e-17.
_SIN = tuple((-1) ** k / math.factorial(2 * k + 1) for k in range(8))  # x, x^3, ..., x^15
_COS = tuple((-1) ** k / math.factorial(2 * k) for k in range(9))  # 1, x^2, ..., x^16
_EXP = tuple(1 / math.factorial(k) for k in range(15))  # 1, r, ..., r^14
# ln 2 split so that k * LN2_HI is exact for |k| < 2^20 (the fdlibm constants)
LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
LN2 = 0.6931471805599453  # ln 2, correctly rounded (a literal: no libm call decides it)
LOG2_E = 1.4426950408889634  # 1 / ln 2, correctly rounded
EXP_MIN = -745.2  # below this exp underflows to 0 in float64
EXP_MAX = 709.7  # above this it overflows to inf


def _horner(x: np.ndarray, coefficients: tuple[float, ...]) -> np.ndarray:
    """sum_k c_k x^k, evaluated highest power first, one rounding per operation."""
    out = np.full_like(x, coefficients[-1])
    for c in coefficients[-2::-1]:
        out = out * x + c
    return out


def _quadrants(turns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """turns = n + q/4 + s with |s| <= 1/8: (sin(2 pi s), cos(2 pi s), q mod 4)."""
    r = turns - np.rint(turns)  # [-1/2, 1/2], exact
    q = np.rint(4 * r)  # -2..2
    x = (r - 0.25 * q) * TWO_PI  # [-pi/4, pi/4]
    x2 = x * x
    return x * _horner(x2, _SIN), _horner(x2, _COS), np.mod(q, 4).astype(np.int8)


def sin_turns(turns: np.ndarray | float) -> np.ndarray:
    """sin(2 pi * turns): a phase given in whole periods, the natural unit of an oscillator."""
    s, c, q = _quadrants(np.asarray(turns, dtype=np.float64))
    return np.select([q == 0, q == 1, q == 2], [s, c, -s], -c)


def cos_turns(turns: np.ndarray | float) -> np.ndarray:
    """cos(2 pi * turns)."""
    s, c, q = _quadrants(np.asarray(turns, dtype=np.float64))
    return np.select([q == 0, q == 1, q == 2], [c, -s, -c], s)


def sin(x: np.ndarray | float) -> np.ndarray:
    """sin of radians."""
    return sin_turns(np.asarray(x, dtype=np.float64) * INV_TWO_PI)


def cos(x: np.ndarray | float) -> np.ndarray:
    """cos of radians."""
    return cos_turns(np.asarray(x, dtype=np.float64) * INV_TWO_PI)


def exp(x: np.ndarray | float) -> np.ndarray:
    """e^x: x = k ln 2 + r with |r| <= ln(2)/2, e^x = 2^k e^r (ldexp scales exactly)."""
    x = np.clip(np.asarray(x, dtype=np.float64), EXP_MIN, EXP_MAX)
    k = np.rint(x * LOG2_E)
    r = (x - k * LN2_HI) - k * LN2_LO
    return np.ldexp(_horner(r, _EXP), k.astype(np.int32))


def exp2(x: np.ndarray | float) -> np.ndarray:
    """2^x."""
    return exp(np.asarray(x, dtype=np.float64) * LN2)


def hann(n: int) -> np.ndarray:
    """The symmetric Hann window of n points (numpy.hanning's definition)."""
    if n <= 1:
        return np.ones(max(n, 0))
    return 0.5 - 0.5 * cos_turns(np.arange(n) / (n - 1))
