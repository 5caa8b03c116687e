"""The compiled kernels against the NumPy reference (docs/model.md#network; rnn.py, _fast.py).

The reference kernel is the oracle: after a whole run the fast kernel's records
(probe outputs and the stationary risk) must equal it to 1e-10 relative, for
both gradient options and both activations.  The fast path must also be
invariant to how a run is cut (data pieces, replica blocks), and the piecewise
data stream must equal ``sample_data`` bit for bit.
"""

import os
import platform
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from distntk import _fast
from distntk.chain import markov_chain, window_chain
from distntk.experiment import Experiment
from distntk.rnn import ENGINES, RNNConfig, _DataStream, data_seed, run_replicas, sample_data
from distntk.target import make_target

REL = 1e-10


@pytest.fixture(scope="module")
def binary():
    chain = markov_chain([[0.8, 0.2], [0.3, 0.7]], [-1.0, 1.0])
    target = make_target("tanh_linear", inner=[1, 0.8], outer=[0, 0, 0.3])
    win = window_chain(chain, 6)
    f = target.on_windows(chain.inputs, win.histories)
    return chain, target, win, f


def _rel(a, b):
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-300)))


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
@pytest.mark.parametrize("gradient", ["rtrl", "truncated"])
def test_fast_equals_reference_after_a_full_run(binary, activation, gradient):
    chain, target, win, f = binary
    cfg = RNNConfig(activation=activation, gradient=gradient, b_max=0.3 if activation == "tanh" else 2.0,
                    noise_std=0.1, alpha=2.0)
    probes = win.histories[[3, 0, 63, 3]]  # unsorted, with a repeat
    runs = {
        k: run_replicas(cfg, chain, target, 70, 2.5, np.linspace(0, 2.5, 6), probes, root=3, width_key=70,
                        init=1, data=[0, 1, 2], L=6, engine=k, risk=(win.histories, win.pi, f))
        for k in ("reference", "fast")
    }
    (out_r, risk_r), (out_f, risk_f) = runs["reference"], runs["fast"]
    assert np.all(np.isfinite(out_f)) and np.ptp(out_f[:, -1]) > 0  # the run trained and moved
    assert _rel(out_r, out_f) < REL
    assert _rel(risk_r, risk_f) < REL


def test_fast_equals_reference_in_two_dimensions():
    chain = markov_chain([[0.5, 0.3, 0.2], [0.2, 0.6, 0.2], [0.3, 0.3, 0.4]],
                         [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    target = make_target("linear", weights=[1.0, -0.5])
    win = window_chain(chain, 4)
    f = target.on_windows(chain.inputs, win.histories)
    cfg = RNNConfig(noise_std=0.2)
    res = [run_replicas(cfg, chain, target, 50, 3.0, [0, 0.5, 1.7, 3.0], win.histories[[5, 0, 40]], root=1,
                        width_key=50, init=2, data=[0, 1], L=4, engine=k, risk=(win.histories, win.pi, f))
           for k in ("reference", "fast")]
    for a, b in zip(*res, strict=True):
        assert _rel(a, b) < REL


def test_fast_is_invariant_to_pieces_and_blocks(binary):
    chain, target, win, f = binary
    cfg = RNNConfig(noise_std=0.1)
    probes = win.histories[:5]
    kw = dict(root=0, width_key=64, init=0, L=6, engine="fast", risk=(win.histories, win.pi, f))
    out3, risk3 = run_replicas(cfg, chain, target, 64, 2.0, [0, 0.3, 2.0], probes, data=[4, 5, 6], **kw)
    out1, risk1 = run_replicas(cfg, chain, target, 64, 2.0, [0, 0.3, 2.0], probes, data=[5], chunk=7, **kw)
    np.testing.assert_array_equal(out1[0], out3[1])
    np.testing.assert_array_equal(risk1[0], risk3[1])


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_data_stream_equals_sample_data(binary, noise):
    chain, target, _, _ = binary
    cfg = RNNConfig(noise_std=noise)
    seed = data_seed(0, 64, 0, 3)
    path, y = sample_data(chain, target, cfg, 8, 500, np.random.default_rng(seed))
    stream = _DataStream(chain, target, cfg, 8, 500, seed)
    xb = stream.burn_in()
    pieces = [stream.train(n) for n in (1, 7, 100, 392)]
    np.testing.assert_array_equal(np.concatenate([xb] + [x for x, _ in pieces]), chain.inputs[path])
    np.testing.assert_array_equal(np.concatenate([v for _, v in pieces]), y)


def test_simd_tanh_is_within_a_few_ulp():
    u = np.concatenate([np.linspace(-25, 25, 200001), np.linspace(-1e-3, 1e-3, 2001),
                        [0.0, -0.0, 1e-300, 0.625, -0.625, np.nextafter(0.625, 1.0), 19.0, 20.0, 700.0, -np.inf]])
    out = np.empty_like(u)
    _fast._tanh_array(u, out)
    ref = np.tanh(u)
    ulps = np.abs(out - ref) / np.spacing(np.maximum(np.abs(ref), 1e-300))
    assert ulps.max() <= 4
    nan = np.empty(1)
    _fast._tanh_array(np.array([np.nan]), nan)
    assert np.isnan(nan[0])


def test_fast_is_the_default_and_reference_stays_selectable():
    assert set(ENGINES) >= {"reference", "fast"}
    assert run_replicas.__defaults__ is not None and "fast" in run_replicas.__defaults__
    assert Experiment.__dataclass_fields__["engine"].default == "fast"


def _has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            return platform.machine() == "x86_64" and " avx2 " in fh.read()
    except OSError:
        return False


def test_numba_cache_works_on_a_fresh_copy_and_never_serves_another_cpu(tmp_path):
    """A fresh copy compiles once, writes its cache beside the code, and the next process loads it.

    A process that generates code for another CPU (Haswell: AVX2, no AVX-512) finds no cache
    entry it can use and compiles its own; its results are the same bits (explicit FMAs, no
    fast-math, fixed summation order).
    """
    src = Path(__file__).resolve().parents[1] / "distntk"
    shutil.copytree(src, tmp_path / "distntk", ignore=shutil.ignore_patterns("__pycache__"))
    script = textwrap.dedent("""
        import hashlib
        import numpy as np
        from distntk import _fast
        run = _fast.segment_kernel(1, True, False)
        rng = np.random.default_rng(0)
        R, N, n = 2, 37, 50
        c, a, b = rng.uniform(-1, 1, (R, N)), rng.standard_normal((R, N)), rng.uniform(-0.3, 0.3, (R, N))
        w, S, J = rng.standard_normal((R, N, 1)), np.zeros((R, N)), np.zeros((R, N, 3))
        run(c, w, a, b, S, J, rng.choice([-1.0, 1.0], (R, n, 1)), rng.standard_normal((R, n)), 0.3, 0.2, True)
        win = _fast.window_kernel(False)
        out = np.empty((R, 3))
        win(c, w, a, b, np.array([[-1.0], [1.0]]), np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]]),
            np.zeros(3, dtype=np.int64), 0.5, out)
        disp = [run.compiled[0], win]
        digest = hashlib.sha256(b"".join(x.tobytes() for x in (c, w, a, b, S, J, out))).hexdigest()
        hits = sum(sum(d.stats.cache_hits.values()) for d in disp)
        print(hits, sum(sum(d.stats.cache_misses.values()) for d in disp), digest)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_CACHE_DIR", "NUMBA_CPU"))}
    env["PYTHONPATH"] = str(tmp_path)

    def run(extra=None):
        proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=dict(env, **(extra or {})),
                              capture_output=True, text=True, check=True)
        return proc.stdout.split()

    first = run()
    assert list((tmp_path / "distntk" / "__pycache__").glob("_fast*.nbi"))
    second = run()
    assert first[:2] == ["0", "2"]
    assert second[:2] == ["2", "0"]
    assert second[2] == first[2]
    if _has_avx2():
        haswell = run({"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": ""})
        assert haswell[:2] == ["0", "2"]  # compiled afresh: the cache holds only the native CPU's code
        assert haswell[2] == first[2]  # and the same bits


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
@pytest.mark.parametrize("rtrl", [True, False])
def test_compiled_memory_jacobian_equals_reference(activation, rtrl):
    """The limit's quadrature kernel (depth-first over prefixes) against rnn.memory_and_jacobian."""
    from distntk.rnn import memory_and_jacobian

    chain = markov_chain([[0.5, 0.3, 0.2], [0.2, 0.6, 0.2], [0.3, 0.3, 0.4]],
                         [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    win = window_chain(chain, 5)
    rng = np.random.default_rng(0)
    Q, d = 37, 2
    w, a, b = rng.standard_normal((Q, d)), rng.standard_normal(Q), rng.uniform(-0.3, 0.3, Q)
    s, J = memory_and_jacobian(w, a, b, chain.inputs[win.histories], activation, rtrl)
    s_out, J_out = np.empty((win.n_histories, Q)), np.empty((win.n_histories, d + 2, Q))
    _fast.memory_jacobian_kernel(d, rtrl, activation == "sigmoid")(
        np.ascontiguousarray(w.T), a, b, chain.inputs, win.histories, _fast.common_prefix(win.histories), s_out, J_out)
    np.testing.assert_allclose(s_out.T, s, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(J_out.transpose(2, 0, 1), J, rtol=1e-13, atol=1e-15)
