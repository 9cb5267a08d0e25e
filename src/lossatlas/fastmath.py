"""Transcendental functions and random numbers as plain arithmetic, for numba kernels.

numba without SVML turns ``math.tanh/exp/log`` into scalar libm calls, which stops LLVM from
vectorising a loop over chains. These versions are branch-free polynomials and rationals with
integer bit tricks (via ``bitcast``), so a loop over chains becomes SIMD code. Every function
comes in float32 and float64 flavours; the generic names (``tanh``, ``exp``, ``log``, ...)
dispatch on the argument's type inside jitted code.

Accuracy (measured in tests/test_fused.py against numpy float64; the bounds asserted there):

- ``tanh``: float32 Eigen's 13/6 rational, clamped at +-7.905; float64 ``-expm1(-2|x|) /
  (2 + expm1(-2|x|))``.
- ``exp``/``expm1``: Cody-Waite reduction by ln 2, Taylor polynomial of ``e^r - 1``
  (degree 7 / 13), ``2^n`` from the exponent bits.
- ``log``: exponent from the bits, ``2 atanh((m - 1) / (m + 1))`` series on
  ``m in [sqrt(1/2), sqrt(2))``; positive finite inputs (NaN and +inf pass through).

NaN inputs give NaN everywhere, so a non-finite energy still rejects the proposal.

Random numbers: ``mix64`` is the SplitMix64 output function; ``counter_u64(key, n)`` is the
``n``-th SplitMix64 output from state ``key``, so a whole step's numbers are a pure function
of one 64-bit key (drawn from the caller's ``numpy.random.Generator``) and a counter.

Everything here also compiles for the CUDA target (:mod:`lossatlas.sampling.cuda` calls the
same functions from its kernels): the overloads are registered for the generic target, and
``floor``/``sqrt`` pick ``np.floor``/``np.sqrt`` on the CPU and ``math.floor``/``math.sqrt``
on CUDA, which has no NumPy ufuncs for them (the CPU numbers are the same as with the ufuncs).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

# no 'reassoc' (it would undo the compensated sums) and no 'nnan'/'ninf' (NaN must propagate)
FASTMATH = {"nsz", "arcp", "contract", "afn"}

_jit = njit(fastmath=FASTMATH, cache=True, error_model="numpy")
# inlined in numba IR: a call left to LLVM stays a call, and a loop with a call does not vectorise
_inl = njit(fastmath=FASTMATH, cache=True, error_model="numpy", inline="always")

# ---------------------------------------------------------------------------------------
# bit casts


@intrinsic
def as_int(typingctx, x):
    """The bits of a float as a signed integer of the same width."""
    if not isinstance(x, types.Float):
        return None
    ity = types.int32 if x.bitwidth == 32 else types.int64

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(x.bitwidth))

    return ity(x), codegen


@intrinsic
def as_float(typingctx, i):
    """The float whose bits are the (32- or 64-bit) integer ``i``."""
    if not isinstance(i, types.Integer) or i.bitwidth not in (32, 64):
        return None
    fty = types.float32 if i.bitwidth == 32 else types.float64

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType() if i.bitwidth == 32 else ir.DoubleType())

    return fty(i), codegen


def like(x, v):
    """``v`` as a scalar of ``x``'s float type (jitted code only; numba would promote a Python
    float literal mixed with float32 to float64, and the loop would run at half width)."""
    return type(x)(v)


# "generic": the CPU and the CUDA target; the other overloads here likewise
_OV = dict(jit_options={"fastmath": FASTMATH, "error_model": "numpy"}, target="generic")


@overload(like, inline="always", **_OV)
def _like(x, v):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x, v: np.float32(v)
    return lambda x, v: np.float64(v)


def _per_target(cpu, cuda, doc):
    """A scalar float function with one implementation per target (jitted code only)."""

    def stub(x):
        raise NotImplementedError("jitted code only")

    stub.__doc__ = doc
    _register(stub, "cpu", cpu)
    _register(stub, "cuda", cuda)
    return stub


def _register(stub, target, impl):
    @overload(stub, inline="always", target=target, jit_options=_OV["jit_options"])
    def _ov(x):
        return impl if isinstance(x, types.Float) else None


floor = _per_target(lambda x: np.floor(x), lambda x: math.floor(x), "``floor(x)`` as a float.")
sqrt = _per_target(lambda x: np.sqrt(x), lambda x: math.sqrt(x), "``sqrt(x)``.")


# ---------------------------------------------------------------------------------------
# float32


@_jit
def tanh32(x):
    c = np.float32(7.90531110763549805)
    v = min(max(x, -c), c)
    v2 = v * v
    p = np.float32(-2.76076847742355e-16)
    p = p * v2 + np.float32(2.00018790482477e-13)
    p = p * v2 + np.float32(-8.60467152213735e-11)
    p = p * v2 + np.float32(5.12229709037114e-08)
    p = p * v2 + np.float32(1.48572235717979e-05)
    p = p * v2 + np.float32(6.37261928875436e-04)
    p = p * v2 + np.float32(4.89352455891786e-03)
    q = np.float32(1.19825839466702e-06)
    q = q * v2 + np.float32(1.18534705686654e-04)
    q = q * v2 + np.float32(2.26843463243900e-03)
    q = q * v2 + np.float32(4.89352518554385e-03)
    r = v * p / q
    return r if x == x else x


@_jit
def _exp_parts32(x):
    """``(2^n, e^r - 1)`` with ``x = n ln2 + r``, ``|r| <= ln2 / 2``; x clamped to the range
    where ``2^n`` is a normal float."""
    xc = min(max(x, np.float32(-87.3)), np.float32(88.7))
    n = floor(xc * np.float32(1.44269504088896341) + np.float32(0.5))
    r = xc - n * np.float32(0.693359375) - n * np.float32(-2.12194440e-4)
    p = np.float32(1.0 / 5040)
    p = p * r + np.float32(1.0 / 720)
    p = p * r + np.float32(1.0 / 120)
    p = p * r + np.float32(1.0 / 24)
    p = p * r + np.float32(1.0 / 6)
    p = p * r + np.float32(0.5)
    pm1 = r + r * r * p
    # numba widens int32 arithmetic to int64: narrow before the bitcast
    scale = as_float(np.int32((np.int32(n) + np.int32(127)) << np.int32(23)))
    return scale, pm1


@_jit
def exp32(x):
    scale, pm1 = _exp_parts32(x)
    r = scale + scale * pm1
    r = np.float32(np.inf) if x > np.float32(88.7) else r
    return r if x == x else x


@_jit
def expm1_32(x):
    scale, pm1 = _exp_parts32(x)
    r = (scale - np.float32(1)) + scale * pm1
    r = np.float32(np.inf) if x > np.float32(88.7) else r
    return r if x == x else x


@_jit
def log32(x):
    i = as_int(x)
    e = np.int32(((i >> np.int32(23)) & np.int32(0xFF)) - np.int32(127))
    m = as_float(np.int32((i & np.int32(0x7FFFFF)) | np.int32(0x3F800000)))
    big = m > np.float32(1.41421356)
    m = m * np.float32(0.5) if big else m
    e = np.int32(e + np.int32(1)) if big else e
    s = (m - np.float32(1)) / (m + np.float32(1))
    s2 = s * s
    p = np.float32(1.0 / 11)
    p = p * s2 + np.float32(1.0 / 9)
    p = p * s2 + np.float32(1.0 / 7)
    p = p * s2 + np.float32(1.0 / 5)
    p = p * s2 + np.float32(1.0 / 3)
    ef = np.float32(e)
    r = ef * np.float32(0.693359375) + (
        ef * np.float32(-2.12194440e-4) + np.float32(2) * s * (np.float32(1) + s2 * p)
    )
    return r if x < np.float32(np.inf) else x


# ---------------------------------------------------------------------------------------
# float64


@_jit
def _exp_parts64(x):
    xc = min(max(x, -708.0), 709.0)
    n = floor(xc * 1.4426950408889634 + 0.5)
    r = xc - n * 6.93147180369123816490e-01 - n * 1.90821492927058770002e-10
    p = 1.0 / 6227020800.0
    for d in (479001600.0, 39916800.0, 3628800.0, 362880.0, 40320.0, 5040.0, 720.0, 120.0):
        p = p * r + 1.0 / d
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    pm1 = r + r * r * p
    scale = as_float((np.int64(n) + np.int64(1023)) << np.int64(52))
    return scale, pm1


@_jit
def exp64(x):
    scale, pm1 = _exp_parts64(x)
    r = scale + scale * pm1
    r = np.inf if x > 709.0 else r
    return r if x == x else x


@_jit
def expm1_64(x):
    scale, pm1 = _exp_parts64(x)
    r = (scale - 1.0) + scale * pm1
    r = np.inf if x > 709.0 else r
    return r if x == x else x


@_jit
def tanh64(x):
    a = min(abs(x), 20.0)
    em = expm1_64(-2.0 * a)
    t = -em / (2.0 + em)
    r = t if x >= 0 else -t
    return r if x == x else x


@_jit
def log64(x):
    i = as_int(x)
    e = ((i >> np.int64(52)) & np.int64(0x7FF)) - np.int64(1023)
    m = as_float((i & np.int64(0xFFFFFFFFFFFFF)) | np.int64(0x3FF0000000000000))
    big = m > 1.4142135623730951
    m = m * 0.5 if big else m
    e = e + 1 if big else e
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    p = 1.0 / 23.0
    for d in (21.0, 19.0, 17.0, 15.0, 13.0, 11.0, 9.0, 7.0, 5.0, 3.0):
        p = p * s2 + 1.0 / d
    ef = np.float64(e)
    r = ef * 6.93147180369123816490e-01 + (
        ef * 1.90821492927058770002e-10 + 2.0 * s * (1.0 + s2 * p)
    )
    return r if x < np.inf else x


# ---------------------------------------------------------------------------------------
# generic names


def _dispatch(f32, f64):
    def stub(x):
        raise NotImplementedError("jitted code only; call the *32/*64 functions from Python")

    @overload(stub, inline="always", **_OV)
    def _ov(x):
        if isinstance(x, types.Float):
            return (lambda x: f32(x)) if x.bitwidth == 32 else (lambda x: f64(x))
        return None

    return stub


tanh = _dispatch(tanh32, tanh64)
exp = _dispatch(exp32, exp64)
expm1 = _dispatch(expm1_32, expm1_64)
log = _dispatch(log32, log64)


@_jit
def log1p_small(t):
    """``log(1 + t)`` for ``t >= 0`` with the rounding of ``1 + t`` compensated."""
    u = like(t, 1) + t
    return log(u) - ((u - like(t, 1)) - t) / u


# ---------------------------------------------------------------------------------------
# random numbers

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@_jit
def mix64(z):
    """SplitMix64's output function (a bijection of uint64)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@_jit
def counter_u64(key, n):
    """The ``n``-th output (``n >= 0``) of SplitMix64 started from state ``key``."""
    return mix64(key + (np.uint64(n) + np.uint64(1)) * _GAMMA)


@_jit
def uniform64(r):
    """A float64 in (0, 1] from the top 53 bits of ``r``."""
    return (np.float64(np.int64(r >> np.uint64(11))) + 1.0) * (1.0 / 9007199254740992.0)


_SQRT_HALF = float(np.sqrt(0.5))  # a constant: CUDA has no np.sqrt


@_jit
def _sincos_quarter(u, like_x):
    """``(cos a, sin a)`` for ``a = (pi / 2) u``, ``u in [0, 1)``: Taylor series around pi/4."""
    t = (u - like(like_x, 0.5)) * like(like_x, np.pi / 2)
    t2 = t * t
    s = like(like_x, -1.0 / 39916800)
    for d in (362880.0, -5040.0, 120.0, -6.0):
        s = s * t2 + like(like_x, 1.0 / d)
    s = t + t * t2 * s
    c = like(like_x, 1.0 / 479001600)
    for d in (-3628800.0, 40320.0, -720.0, 24.0):
        c = c * t2 + like(like_x, 1.0 / d)
    c = like(like_x, 1.0) + t2 * (like(like_x, -0.5) + t2 * c)
    h = like(like_x, _SQRT_HALF)
    return (c - s) * h, (c + s) * h


def normal_pair(r1, r2, like_x):
    """Two independent standard normals (Box-Muller) from two 64-bit random words, in the
    float type of ``like_x`` (jitted code only).

    The radius takes ``u1 in (0, 1]`` from the top 53 (float64) or 24 (float32) bits of ``r1``,
    which truncates the radius at 8.57 / 5.77 standard deviations. The angle is a uniform
    quarter turn from ``r2``'s low 53 / 24 bits and the quadrant (the two signs) from its top
    two bits, so each coordinate is exactly symmetric about 0 whatever the rounding of the
    polynomials: random-walk proposals stay exactly symmetric.
    """
    raise NotImplementedError("jitted code only")


@overload(normal_pair, **_OV)
def _normal_pair_ov(r1, r2, like_x):
    if isinstance(like_x, types.Float) and like_x.bitwidth == 32:

        def impl(r1, r2, like_x):
            u1 = (np.float32(np.int32(r1 >> np.uint64(40))) + np.float32(1)) * np.float32(
                5.9604644775390625e-08
            )
            u2 = np.float32(np.int32(r2 & np.uint64(0xFFFFFF))) * np.float32(5.9604644775390625e-08)
            rad = sqrt(np.float32(-2) * log32(u1))
            c, s = _sincos_quarter(u2, np.float32(0))
            z0 = rad * c
            z1 = rad * s
            z0 = -z0 if (r2 >> np.uint64(63)) != np.uint64(0) else z0
            z1 = -z1 if (r2 >> np.uint64(62)) & np.uint64(1) != np.uint64(0) else z1
            return z0, z1

        return impl

    def impl(r1, r2, like_x):
        u1 = uniform64(r1)
        u2 = np.float64(np.int64(r2 & np.uint64(0x1FFFFFFFFFFFFF))) * (1.0 / 9007199254740992.0)
        rad = sqrt(-2.0 * log64(u1))
        c, s = _sincos_quarter(u2, np.float64(0))
        z0 = rad * c
        z1 = rad * s
        z0 = -z0 if (r2 >> np.uint64(63)) != np.uint64(0) else z0
        z1 = -z1 if (r2 >> np.uint64(62)) & np.uint64(1) != np.uint64(0) else z1
        return z0, z1

    return impl
