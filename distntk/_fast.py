"""Compiled (numba) kernels for the finite-N RNN: training segments and window outputs.

The mathematics is that of :mod:`distntk.rnn` (docs/model.md#network); these kernels compute
exactly what :func:`distntk.rnn._segment_reference`, :func:`~distntk.rnn.probe_outputs`
and :func:`~distntk.rnn.history_outputs` compute, in a different order of work.

Fused training step.  Within one replica, step ``k`` of the reference is two sweeps
over the units (forward: ``u, S, J``; then the SGD update with the scalar error
``e_k``).  The update of unit ``i`` at step ``k`` needs only ``e_k`` and unit ``i``'s
own ``S, J``, and the forward pass of step ``k + 1`` needs only unit ``i``'s updated
parameters, so one sweep per step does both: apply the pending update (with
``g = eta N^{-beta} e_{k-1}``; ``g = 0`` is an exact no-op), then advance the unit
and accumulate ``c^i S^i_k`` for ``Yhat_k``.  The last pending update is applied
at the end of the segment, so a segment ends in the reference's state.

Layout.  Each replica's unit arrays are packed once per segment call into one
scratch block ``Z`` (rows ``c, a, b, S, w_1..w_d, J_1..J_{d+2}`` and the products
``c S``; ``2 d + 7`` rows, structure of arrays), so the unit loop streams contiguous
rows and runs as SIMD code; at ``N <= 16384`` and ``d = 1`` a replica's block is
about 1 MiB and stays in L2 for the whole segment.  Rows are padded to
``_row_stride(N)`` doubles (``48 mod 512``): rows a multiple of 4 KiB apart fall
into the same L1 cache sets and alias in the CPU's load/store ordering, which
slowed the sweep several-fold at ``N = 1024`` and ``4096``.  ``d``, the gradient
option and the activation are compile-time constants (one compiled variant each).

Cost per unit-step (``d = 1``, RTRL): one ``tanh`` (23 vector instructions with
AVX-512, 25 with AVX2, one division) and 15 more operations (an FMA counts once),
11 loads (the compiler reads the three ``J`` rows twice) and 9 stores; no
float-to-integer conversion, which AVX2 lacks for vectors.  ``bench/bench_kernel.py``
counts them in the compiled loop and compares the sweep with its ``tanh`` alone.

Reproducibility.  No fast-math: every operation is an IEEE double operation or an
explicit fused multiply-add (``llvm.fma``, :func:`_fma`) in a fixed order (the sum
for ``Yhat_k`` in eight interleaved partial sums, then a fixed tree), and ``tanh``
is computed by :func:`_tanh` from ``+ - * /``, FMAs and an exponent bit pattern,
so the results do not depend on the CPU (AVX2 or AVX-512, vector or scalar
remainder loop) or on how a run is cut into segments or replica blocks.  They
differ from the NumPy reference by round-off only (``_tanh`` is within 4 ulp of
``numpy.tanh``).  numba's on-disk cache keys every entry by the CPU name and
features it was compiled for, so a cache shared between machines never serves
code compiled for another CPU (tests/test_kernels.py checks this with Haswell code
generation).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__: list[str] = []  # private: registered in distntk.rnn.ENGINES

_JIT = dict(cache=True, error_model="numpy", fastmath=False)  # error_model: no zero-division checks, so loops vectorise


@intrinsic
def _double_from_bits(typingctx, bits):
    """Reinterpret an int64 bit pattern as a float64 (LLVM bitcast)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@intrinsic
def _bits_of_double(typingctx, x):
    """Reinterpret a float64 as its int64 bit pattern (LLVM bitcast)."""
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


@intrinsic
def _fma(typingctx, x, y, z):
    """``x * y + z`` with one rounding (``llvm.fma``): the same bits on every CPU.

    One instruction where the CPU has FMA (AVX2 machines and later); elsewhere
    LLVM calls libm's ``fma``, slower but with the same result.
    """
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        dbl = ir.DoubleType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(dbl, [dbl, dbl, dbl]), "llvm.fma.f64")
        return builder.call(fn, args)

    return sig, codegen


# exp(r) = (Q(r^2) + r P(r^2)) / (Q(r^2) - r P(r^2)) on |r| <= ln(2)/2 (Cephes exp.c)
_EXP_P = (1.26177193074810590878e-4, 3.02994407707441961300e-2, 9.99999999999999999910e-1)
_EXP_Q = (3.00198505138664455042e-6, 2.52448340349684104192e-3, 2.27265548208155028766e-1, 2.0)
_ROUND = 6755399441055744.0  # 1.5 * 2^52: x + _ROUND - _ROUND is x rounded to an integer


@njit(inline="always", **_JIT)
def _tanh(u):
    """``tanh(u)`` to within 4 ulp, branch-free and without float-to-int conversion, so loops vectorise.

    With ``a = min(|u|, 20)`` (``tanh = 1`` in double precision beyond) and
    ``e^{2a} = 2^n e^r``, ``n = round(2a / ln 2)``, ``r = 2a - n ln 2`` (one FMA;
    the rounding of ``ln 2`` shifts ``e^{2a}`` by up to ``2.4e-17 n`` relative, which
    moves ``tanh`` by at most ``2^{2-n} 2.4e-17 n``), and ``e^r = A / B`` with
    ``A = Q + rP``, ``B = Q - rP`` (Cephes' rational form of ``exp`` on
    ``|r| <= ln(2)/2``, relative error below 1e-18)::

        tanh(a) = (e^{2a} - 1) / (e^{2a} + 1) = ((2^n - 1) A + 2 r P) / (2^n A + B)

    The numerator is exact where it matters: for ``n = 0`` it is ``2 r P``
    (``A - B`` without the cancellation), for ``n >= 1`` both terms are positive
    or the sum is at least ``0.4 B``.  ``n`` is rounded by adding ``1.5 * 2^52``,
    and ``2^n`` is the low 12 bits of that sum plus 1023 shifted into the exponent
    field (no integer arithmetic that could overflow; AVX2 has no vector
    double-to-int64 conversion).  One division; NaN propagates; the sign is
    restored with ``copysign``.
    """
    a = abs(u)
    a = 20.0 if a > 20.0 else a
    x = a + a
    t = _fma(x, 1.4426950408889634, _ROUND)
    n = t - _ROUND
    r = _fma(-n, 0.6931471805599453, x)
    s = _double_from_bits(_bits_of_double(t + 1023.0) << 52)  # low 12 bits of t + 1023: n + 1023
    r2 = r * r
    rp = r * _fma(_fma(_EXP_P[0], r2, _EXP_P[1]), r2, _EXP_P[2])
    q = _fma(_fma(_fma(_EXP_Q[0], r2, _EXP_Q[1]), r2, _EXP_Q[2]), r2, _EXP_Q[3])
    A = q + rp
    B = q - rp
    return math.copysign(_fma(s - 1.0, A, rp + rp) / _fma(s, A, B), u)


@njit(**_JIT)
def _tanh_array(u, out):
    """Elementwise :func:`_tanh` (for tests and the benchmark's throughput probe)."""
    for i in range(u.shape[0]):
        out[i] = _tanh(u[i])


@njit(inline="always", **_JIT)
def _activation(u, sigmoid):
    """``(sigma(u), sigma'(u))`` for tanh or, with ``sigmoid``, the logistic ``(1 + tanh(u/2))/2``.

    ``sigmoid`` is a compile-time constant of each kernel, so inlining leaves one branch-free body.
    """
    if sigmoid:
        s = _fma(0.5, _tanh(0.5 * u), 0.5)
        return s, s * (1.0 - s)
    s = _tanh(u)
    return s, _fma(-s, s, 1.0)


@njit(inline="always", **_JIT)
def _ordered_sum(x):
    """``sum(x)`` in a fixed order (eight interleaved partial sums, then a fixed tree).

    Kept out of the unit sweep so that the sweep has no loop-carried sum and
    vectorises without re-association; the order does not depend on the CPU.
    """
    n = x.shape[0]
    m = n - n % 8
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    for i in range(0, m, 8):
        s0 += x[i]
        s1 += x[i + 1]
        s2 += x[i + 2]
        s3 += x[i + 3]
        s4 += x[i + 4]
        s5 += x[i + 5]
        s6 += x[i + 6]
        s7 += x[i + 7]
    t = ((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7))
    for i in range(m, n):
        t += x[i]
    return t


@njit(**_JIT)
def _row_stride(n):
    """Row length (in doubles) for a scratch block of ``n`` columns: ``>= n`` and ``48 mod 512``.

    Rows a multiple of ``4 KiB`` apart in memory share their L1 cache sets (and the
    low address bits the CPU compares to order loads after stores), so a sweep over
    ten such rows runs at a fraction of its speed.  Rows ``384`` bytes apart modulo
    ``4 KiB`` avoid both.
    """
    return n + (48 - n) % 512


@njit(inline="always", **_JIT)
def _ordered_dot(Y, i0, i1, n):
    """``sum_i Y[i0, i] Y[i1, i]`` over ``i < n`` in a fixed order (as :func:`_ordered_sum`, with FMAs)."""
    m = n - n % 8
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    for i in range(0, m, 8):
        s0 = _fma(Y[i0, i], Y[i1, i], s0)
        s1 = _fma(Y[i0, i + 1], Y[i1, i + 1], s1)
        s2 = _fma(Y[i0, i + 2], Y[i1, i + 2], s2)
        s3 = _fma(Y[i0, i + 3], Y[i1, i + 3], s3)
        s4 = _fma(Y[i0, i + 4], Y[i1, i + 4], s4)
        s5 = _fma(Y[i0, i + 5], Y[i1, i + 5], s5)
        s6 = _fma(Y[i0, i + 6], Y[i1, i + 6], s6)
        s7 = _fma(Y[i0, i + 7], Y[i1, i + 7], s7)
    t = ((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7))
    for i in range(m, n):
        t = _fma(Y[i0, i], Y[i1, i], t)
    return t


@lru_cache(maxsize=None)
def segment_kernel(d: int, rtrl: bool, sigmoid: bool) -> Callable:
    """Compiled segment kernel for input dimension ``d`` and the given options.

    ``run(c, w, a, b, S, J, xs, ys, eta, scale, update)`` (a Python loop over
    replicas around the compiled sweep) advances every replica
    ``xs.shape[1]`` steps in place; arrays as in :mod:`distntk.rnn`
    (``c, a, b, S (R, N)``, ``w (R, N, d)``, ``J (R, N, d + 2)``, ``xs (R, n, d)``,
    ``ys (R, n)``).
    """
    D, RTRL, SIGMOID = int(d), bool(rtrl), bool(sigmoid)
    W0 = 4  # rows of Z: 0 c, 1 a, 2 b, 3 S, W0.. w, J0.. J (w-part, then a, then b)
    J0 = 4 + D
    PR = 6 + 2 * D  # row of the products c^i S^i_k, summed in a fixed order by _ordered_sum
    NROW = 7 + 2 * D

    # Closures over constants only: numba's cache key includes the closure's cells,
    # and a captured dispatcher would change it in every process (no cache hits).
    @njit(**_JIT)
    def steps(Z, N, xs, ys, eta, scale, update):
        """Advance the ``N`` units of one replica's block ``Z`` over ``xs (n, D)``; returns the pending ``g``."""
        escale = eta * scale
        g = 0.0
        for k in range(xs.shape[0]):
            x0 = xs[k, 0]  # hoisted: the compiler cannot know that xs and Z do not overlap
            for i in range(N):
                # pending update of step k-1 (an exact no-op when g == 0)
                ci = Z[0, i]
                Si = Z[3, i]
                gc = g * ci
                ci = _fma(g, Si, ci)
                Z[0, i] = ci
                u = Z[1, i]
                u = _fma(gc, Z[J0 + D, i], u)
                Z[1, i] = u  # a^i
                for j in range(D):
                    wj = _fma(gc, Z[J0 + j, i], Z[W0 + j, i])
                    Z[W0 + j, i] = wj
                    u = _fma(wj, x0 if j == 0 else xs[k, j], u)
                bi = _fma(gc, Z[J0 + D + 1, i], Z[2, i])
                Z[2, i] = bi
                # step k: memory and its Jacobian (docs/model.md (2.6))
                u = _fma(bi, Si, u)
                s, ds = _activation(u, SIGMOID)
                if RTRL:
                    for j in range(D):
                        Z[J0 + j, i] = ds * _fma(bi, Z[J0 + j, i], x0 if j == 0 else xs[k, j])
                    Z[J0 + D, i] = ds * _fma(bi, Z[J0 + D, i], 1.0)
                    Z[J0 + D + 1, i] = ds * _fma(bi, Z[J0 + D + 1, i], Si)
                else:
                    for j in range(D):
                        Z[J0 + j, i] = ds * (x0 if j == 0 else xs[k, j])
                    Z[J0 + D, i] = ds
                    Z[J0 + D + 1, i] = ds * Si
                Z[3, i] = s
                Z[PR, i] = ci * s
            if update:
                g = escale * (ys[k] - scale * _ordered_sum(Z[PR, :N]))
        return g

    @njit(**_JIT)
    def flush(Z, N, g):
        """The last pending update: the same operations as in the sweep."""
        for i in range(N):
            ci = Z[0, i]
            gc = g * ci
            Z[0, i] = _fma(g, Z[3, i], ci)
            Z[1, i] = _fma(gc, Z[J0 + D, i], Z[1, i])
            for j in range(D):
                Z[W0 + j, i] = _fma(gc, Z[J0 + j, i], Z[W0 + j, i])
            Z[2, i] = _fma(gc, Z[J0 + D + 1, i], Z[2, i])

    def run(c, w, a, b, S, J, xs, ys, eta, scale, update):
        R, N = c.shape
        Z = np.zeros((NROW, _row_stride(N)))  # scratch, allocated once per call and reused by every replica
        U = Z[:, :N]
        for r in range(R):
            U[0], U[1], U[2], U[3] = c[r], a[r], b[r], S[r]
            U[W0:J0] = w[r].T
            U[J0:PR] = J[r].T
            g = steps(Z, N, xs[r], ys[r], eta, scale, update)
            if g != 0.0:
                flush(Z, N, g)
            c[r], a[r], b[r], S[r] = U[0], U[1], U[2], U[3]
            w[r] = U[W0:J0].T
            J[r] = U[J0:PR].T

    run.compiled = (steps, flush)  # the numba dispatchers (tests read their cache statistics)
    return run


@lru_cache(maxsize=None)
def window_kernel(sigmoid: bool) -> Callable:
    """Compiled ``g^N(z)`` on a list of windows (depth-first over shared prefixes).

    ``run(c, w, a, b, inputs, windows, lcp, scale, out)``: ``windows (H, L)``
    states (oldest first), ``lcp[h]`` the length of the prefix window ``h``
    shares with window ``h - 1`` (its memory states are reused), ``out (R, H)``.
    The cost is ``N`` tanh per distinct prefix in the order given (``<= 2H`` for
    sorted binary histories) plus an ``N``-term dot product per window (in a
    fixed order, :func:`_ordered_dot`), and the memory ``(L + S + 3) N`` per call.
    """
    SIGMOID = bool(sigmoid)

    @njit(**_JIT)
    def run(c, w, a, b, inputs, windows, lcp, scale, out):
        R, N = c.shape
        n_states, D = inputs.shape
        H, L = windows.shape
        # one scratch block, rows padded (_row_stride): 0 b, 1 c, 2.. w.x_q + a, then the memory levels
        X0 = 2
        S0 = 2 + n_states
        Y = np.zeros((S0 + L + 1, _row_stride(N)))  # row S0 + j + 1: memory after j + 1 inputs; S0 stays 0
        for r in range(R):
            for i in range(N):
                Y[0, i] = b[r, i]
                Y[1, i] = c[r, i]
            for q in range(n_states):
                for i in range(N):
                    v = 0.0
                    for j in range(D):
                        v += w[r, i, j] * inputs[q, j]
                    Y[X0 + q, i] = v + a[r, i]
            for h in range(H):
                start = lcp[h] if h > 0 else 0
                for lev in range(start, L):
                    q = X0 + windows[h, lev]
                    for i in range(N):
                        Y[S0 + lev + 1, i] = _activation(_fma(Y[0, i], Y[S0 + lev, i], Y[q, i]), SIGMOID)[0]
                out[r, h] = scale * _ordered_dot(Y, 1, S0 + L, N)

    return run


def common_prefix(windows: np.ndarray) -> np.ndarray:
    """``lcp[h]``: how many leading states window ``h`` shares with window ``h - 1`` (``lcp[0] = 0``)."""
    windows = np.asarray(windows)
    lcp = np.zeros(len(windows), dtype=np.int64)
    if len(windows) > 1:
        same = windows[1:] == windows[:-1]
        lcp[1:] = np.cumprod(same, axis=1).sum(axis=1)
    return lcp


@njit(inline="always", **_JIT)
def _input_drive(w, a, inputs, D):
    """``wx[q, i] = w_i . x_q + a_i`` for every state ``q`` and parameter point ``i`` (``w (D, Q)``)."""
    Q = a.shape[0]
    wx = np.empty((inputs.shape[0], Q))
    for q in range(inputs.shape[0]):
        for i in range(Q):
            v = 0.0
            for j in range(D):
                v += w[j, i] * inputs[q, j]
            wx[q, i] = v + a[i]
    return wx


@lru_cache(maxsize=None)
def memory_jacobian_kernel(d: int, rtrl: bool, sigmoid: bool) -> Callable:
    """Compiled memory state and Jacobian of many parameter points on many windows.

    ``run(w, a, b, inputs, windows, lcp, s_out, J_out)``: parameter points
    ``w (d, Q)``, ``a, b (Q,)``; ``windows (H, L)`` sorted so that ``lcp`` (see
    :func:`common_prefix`) lets window ``h`` reuse the states of window
    ``h - 1``; fills ``s_out (H, Q)`` and ``J_out (H, d + 2, Q)`` (ordered
    ``w, a, b``) as :func:`distntk.rnn.memory_and_jacobian` defines them.
    Vectorised over the points; the cost is ``Q`` per distinct prefix.
    """
    D, RTRL, SIGMOID = int(d), bool(rtrl), bool(sigmoid)

    @njit(**_JIT)
    def run(w, a, b, inputs, windows, lcp, s_out, J_out):
        Q = a.shape[0]
        H, L = windows.shape
        wx = _input_drive(w, a, inputs, D)
        s = np.zeros((L + 1, Q))  # level 0 is the zero start
        J = np.zeros((L + 1, D + 2, Q))
        for h in range(H):
            start = lcp[h] if h > 0 else 0
            if start >= L:  # the same window as h - 1 (or L = 0): its states
                s_out[h] = s_out[h - 1] if h > 0 else s[L]
                J_out[h] = J_out[h - 1] if h > 0 else J[L]
                continue
            for lev in range(start, L):
                q = windows[h, lev]
                # the last level is stored straight into the outputs (no copy of level L per window)
                sn = s_out[h] if lev == L - 1 else s[lev + 1]
                Jn = J_out[h] if lev == L - 1 else J[lev + 1]
                for i in range(Q):
                    sp = s[lev, i]
                    bi = b[i]
                    si, ds = _activation(wx[q, i] + bi * sp, SIGMOID)
                    sn[i] = si
                    if RTRL:
                        for j in range(D):
                            Jn[j, i] = ds * (inputs[q, j] + bi * J[lev, j, i])
                        Jn[D, i] = ds * (1.0 + bi * J[lev, D, i])
                        Jn[D + 1, i] = ds * (sp + bi * J[lev, D + 1, i])
                    else:
                        for j in range(D):
                            Jn[j, i] = ds * inputs[q, j]
                        Jn[D, i] = ds
                        Jn[D + 1, i] = ds * sp

    return run


@lru_cache(maxsize=None)
def memory_features_kernel(d: int, rtrl: bool, sigmoid: bool) -> Callable:
    """Weighted features ``Pi^{1/2} Phi`` of a node block, written straight into one array.

    ``run(w, a, b, inputs, windows, lcp, ws, wj, sq, X) -> tr``: the recursion of
    :func:`memory_jacobian_kernel` (same arguments ``w, a, b, inputs, windows,
    lcp``), but window ``h``'s last state goes into row ``h`` of ``X (H, (d + 3) Q)``
    as ``X[h, i] = s_i (ws_i sq_h)`` and ``X[h, (1 + j) Q + i] = J_{j,i} (wj_i sq_h)``
    (the layout of ``hstack([s, J.reshape(H, -1)])``, the same products in the same
    order), and the sum of the squares of ``X`` is returned.  One write of ``X``:
    no separate ``s``/``J`` arrays, scaling passes or copy.  Compiled without the
    GIL, so threads may fill disjoint row ranges of one ``X`` at once (a range
    starts from the zero state: pass it ``lcp`` sliced, whose first entry is then
    ignored).
    """
    D, RTRL, SIGMOID = int(d), bool(rtrl), bool(sigmoid)

    @njit(nogil=True, **_JIT)
    def run(w, a, b, inputs, windows, lcp, ws, wj, sq, X):
        Q = a.shape[0]
        H, L = windows.shape
        wx = _input_drive(w, a, inputs, D)
        s = np.zeros((L + 1, Q))  # level 0 is the zero start; level L the last window's state
        J = np.zeros((L + 1, D + 2, Q))
        cs = np.empty(Q)
        cj = np.empty(Q)
        tr = 0.0
        for h in range(H):
            start = lcp[h] if h > 0 else 0
            for lev in range(start, L):  # none when window h repeats window h - 1: level L is its state
                q = windows[h, lev]
                for i in range(Q):
                    sp = s[lev, i]
                    bi = b[i]
                    si, ds = _activation(wx[q, i] + bi * sp, SIGMOID)
                    s[lev + 1, i] = si
                    if RTRL:
                        for j in range(D):
                            J[lev + 1, j, i] = ds * (inputs[q, j] + bi * J[lev, j, i])
                        J[lev + 1, D, i] = ds * (1.0 + bi * J[lev, D, i])
                        J[lev + 1, D + 1, i] = ds * (sp + bi * J[lev, D + 1, i])
                    else:
                        for j in range(D):
                            J[lev + 1, j, i] = ds * inputs[q, j]
                        J[lev + 1, D, i] = ds
                        J[lev + 1, D + 1, i] = ds * sp
            sh = sq[h]
            for i in range(Q):
                cs[i] = ws[i] * sh
                cj[i] = wj[i] * sh
            acc = 0.0
            for i in range(Q):
                x = s[L, i] * cs[i]
                X[h, i] = x
                acc += x * x
            for j in range(D + 2):
                off = (1 + j) * Q
                for i in range(Q):
                    x = J[L, j, i] * cj[i]
                    X[h, off + i] = x
                    acc += x * x
            tr += acc
        return tr

    return run


@lru_cache(maxsize=None)
def path_jacobian_kernel(d: int, rtrl: bool, sigmoid: bool) -> Callable:
    """Compiled memory state and Jacobian of many parameter points along one path of states.

    ``run(w, a, b, inputs, path, s, J, s_out, J_out)``: parameter points ``w (d, Q)``,
    ``a, b (Q,)``; ``path (n,)`` states; ``s (Q,)`` and ``J (d + 2, Q)`` the state
    before the path (updated in place, so a long path can be run in pieces); fills
    ``s_out (n, Q)`` and ``J_out (n, d + 2, Q)`` with the state after each step,
    the recursion of :func:`memory_jacobian_kernel` without a restart from 0.
    """
    D, RTRL, SIGMOID = int(d), bool(rtrl), bool(sigmoid)

    @njit(**_JIT)
    def run(w, a, b, inputs, path, s, J, s_out, J_out):
        Q = a.shape[0]
        wx = _input_drive(w, a, inputs, D)
        for k in range(path.shape[0]):
            q = path[k]
            for i in range(Q):
                sp = s[i]
                bi = b[i]
                si, ds = _activation(wx[q, i] + bi * sp, SIGMOID)
                if RTRL:
                    for j in range(D):
                        J[j, i] = ds * (inputs[q, j] + bi * J[j, i])
                    J[D, i] = ds * (1.0 + bi * J[D, i])
                    J[D + 1, i] = ds * (sp + bi * J[D + 1, i])
                else:
                    for j in range(D):
                        J[j, i] = ds * inputs[q, j]
                    J[D, i] = ds
                    J[D + 1, i] = ds * sp
                s[i] = si
                s_out[k, i] = si
                for j in range(D + 2):
                    J_out[k, j, i] = J[j, i]

    return run
