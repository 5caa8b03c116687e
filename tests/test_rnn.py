"""The finite-N RNN: gradients, SGD step, seeds and validation."""

import numpy as np
import pytest

from distntk.chain import markov_chain, window_chain
from distntk.rnn import (
    ENGINES,
    ModelError,
    Params,
    RNNConfig,
    history_outputs,
    init_params,
    memory_and_jacobian,
    probe_outputs,
    run_replicas,
)
from distntk.target import make_target

ACTS = ["tanh", "sigmoid"]


def _theta(rng, Q=5, d=2, b_max=0.9):
    return rng.standard_normal((Q, d)), rng.standard_normal(Q), rng.uniform(-b_max, b_max, Q)


def _fd(fun, w, a, b, eps=1e-6):
    """Central differences of fun(w, a, b) -> (Q, H) in every coordinate, as (Q, H, d+2)."""
    Q, d = w.shape
    cols = []
    for j in range(d + 2):
        dw, da, db = np.zeros_like(w), np.zeros_like(a), np.zeros_like(b)
        if j < d:
            dw[:, j] = eps
        elif j == d:
            da[:] = eps
        else:
            db[:] = eps
        cols.append((fun(w + dw, a + da, b + db) - fun(w - dw, a - da, b - db)) / (2 * eps))
    return np.stack(cols, axis=2)


@pytest.mark.parametrize("act", ACTS)
def test_rtrl_jacobian_matches_finite_differences(act):
    rng = np.random.default_rng(0)
    w, a, b = _theta(rng)
    xs = rng.standard_normal((4, 6, 2))  # 4 windows of length 6
    s, J = memory_and_jacobian(w, a, b, xs, act, rtrl=True)
    fd = _fd(lambda w_, a_, b_: memory_and_jacobian(w_, a_, b_, xs, act)[0], w, a, b)
    np.testing.assert_allclose(J, fd, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("act", ACTS)
def test_truncated_jacobian_is_one_step_derivative(act):
    rng = np.random.default_rng(1)
    w, a, b = _theta(rng)
    xs = rng.standard_normal((3, 5, 2))
    s_prev, _ = memory_and_jacobian(w, a, b, xs[:, :-1], act)
    _, J = memory_and_jacobian(w, a, b, xs, act, rtrl=False)
    from distntk.rnn import ACTIVATIONS

    f = ACTIVATIONS[act][0]
    one_step = lambda w_, a_, b_: f(np.einsum("qd,hd->qh", w_, xs[:, -1]) + a_[:, None] + b_[:, None] * s_prev)[0]  # noqa: E731
    np.testing.assert_allclose(J, _fd(one_step, w, a, b), atol=1e-8, rtol=1e-6)
    # and it differs from the full RTRL Jacobian (the test can tell them apart)
    _, J_full = memory_and_jacobian(w, a, b, xs, act, rtrl=True)
    assert np.max(np.abs(J_full - J)) > 1e-3


@pytest.mark.parametrize("rtrl", [True, False])
def test_training_kernel_recursion_equals_window_recursion(rtrl):
    """The per-step kernel without updates runs the same recursion as the limit's."""
    rng = np.random.default_rng(2)
    R, N, d, L = 3, 7, 2, 6
    p = Params(rng.uniform(-1, 1, (R, N)), rng.standard_normal((R, N, d)), rng.standard_normal((R, N)),
               rng.uniform(-0.5, 0.5, (R, N)))
    xs = rng.standard_normal((R, L, d))
    state = [np.zeros((R, N)), np.zeros((R, N, d + 2))]
    ENGINES["reference"](p, state, xs, np.zeros((R, 0)), 0.1, 0.1, "tanh", rtrl, False)
    for r in range(R):
        s, J = memory_and_jacobian(p.w[r], p.a[r], p.b[r], xs[r : r + 1], "tanh", rtrl)
        np.testing.assert_allclose(state[0][r], s[:, 0], rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(state[1][r], J[:, 0], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("act", ACTS)
def test_sgd_step_is_gradient_descent_on_the_loss(act):
    """With parameters fixed over the history, RTRL gives the exact loss gradient."""
    rng = np.random.default_rng(3)
    N, d, B = 6, 1, 9
    cfg = RNNConfig(activation=act, b_max=0.8 if act == "tanh" else 3.0)
    p = init_params(cfg, N, d, rng)
    xs = rng.standard_normal((1, B + 1, d))
    y = np.array([[0.7]])
    eta, scale = 0.05, N**-0.75

    def loss(c, w, a, b):
        s, _ = memory_and_jacobian(w, a, b, xs[:, :, :], act)  # s after B+1 steps from 0
        return 0.5 * (y[0, 0] - scale * c @ s[:, 0]) ** 2

    state = [np.zeros((1, N)), np.zeros((1, N, d + 2))]
    seg = ENGINES["reference"]
    seg(p, state, xs[:, :B], y[:, :0], eta, scale, act, True, False)
    before = p.copy()
    seg(p, state, xs[:, B:], y, eta, scale, act, True, True)
    c0, w0, a0, b0 = before.c[0], before.w[0], before.a[0], before.b[0]
    eps = 1e-6
    for i in range(N):
        e = np.zeros(N)
        e[i] = eps
        g_c = (loss(c0 + e, w0, a0, b0) - loss(c0 - e, w0, a0, b0)) / (2 * eps)
        g_a = (loss(c0, w0, a0 + e, b0) - loss(c0, w0, a0 - e, b0)) / (2 * eps)
        g_b = (loss(c0, w0, a0, b0 + e) - loss(c0, w0, a0, b0 - e)) / (2 * eps)
        g_w = (loss(c0, w0 + e[:, None], a0, b0) - loss(c0, w0 - e[:, None], a0, b0)) / (2 * eps)
        assert p.c[0, i] - c0[i] == pytest.approx(-eta * g_c, rel=1e-6, abs=1e-12)
        assert p.a[0, i] - a0[i] == pytest.approx(-eta * g_a, rel=1e-6, abs=1e-12)
        assert p.b[0, i] - b0[i] == pytest.approx(-eta * g_b, rel=1e-6, abs=1e-12)
        assert p.w[0, i, 0] - w0[i, 0] == pytest.approx(-eta * g_w, rel=1e-6, abs=1e-12)


def _setup():
    chain = markov_chain([[0.8, 0.2], [0.3, 0.7]], [-1.0, 1.0])
    target = make_target("tanh_linear", inner=[1.0, 0.8], outer=[0.0, 0.0, 0.3])
    return chain, target


def test_replicas_do_not_depend_on_blocking_and_are_reproducible():
    chain, target = _setup()
    cfg = RNNConfig()
    probes = np.array([[0, 0, 0, 0], [1, 0, 1, 1]])
    kw = dict(cfg=cfg, chain=chain, target=target, N=32, T=1.0, times=[0.0, 0.5, 1.0], probes=probes, root=7,
              width_key=32, init=2, L=4)
    whole = run_replicas(data=[0, 1, 2, 3], **kw)
    parts = np.concatenate([run_replicas(data=[0, 1], **kw), run_replicas(data=[2, 3], **kw)])
    np.testing.assert_array_equal(whole, parts)
    np.testing.assert_array_equal(run_replicas(data=[3], **kw)[0], whole[3])
    # replicas sharing an init agree at t = 0 and differ after training on different data
    np.testing.assert_array_equal(whole[:, 0], np.broadcast_to(whole[0, 0], whole[:, 0].shape))
    assert np.all(np.abs(whole[0, -1] - whole[1, -1]) > 0)
    other_init = run_replicas(data=[0], **{**kw, "init": 3})
    assert np.all(other_init[0, 0] != whole[0, 0])


def test_initial_output_is_the_scaled_sum_over_units():
    chain, target = _setup()
    cfg = RNNConfig()
    N = 50
    out = run_replicas(cfg, chain, target, N, 1.0, [0.0], np.array([[0, 1, 1]]), root=1, width_key=N, init=0,
                       data=[0], L=3)
    from distntk.rnn import init_seed

    p = init_params(cfg, N, 1, np.random.default_rng(init_seed(1, N, 0)))
    s, _ = memory_and_jacobian(p.w[0], p.a[0], p.b[0], chain.inputs[np.array([[0, 1, 1]])])
    assert out[0, 0, 0] == pytest.approx(N**-0.75 * p.c[0] @ s[:, 0], rel=1e-13)


def test_history_outputs_equal_direct_probe_evaluation():
    ch = markov_chain([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]], [[-1, 0.5], [1, 0.0], [0.2, 2.0]])
    w = window_chain(ch, 4)
    cfg = RNNConfig()
    p = init_params(cfg, 40, 2, np.random.default_rng(0))
    a = history_outputs(p, ch.inputs, w.histories, 0.1, "tanh")
    b = probe_outputs(p, ch.inputs[w.histories], 0.1, "tanh")
    np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(b_max=1.0), r"rho = b_max \* sup\|sigma'\| = 1; expected rho < 1"),
        (dict(activation="sigmoid", b_max=4.5), "expected rho < 1"),
        (dict(beta=0.5), r"beta is 0.5; expected 1/2 < beta < 1"),
        (dict(beta=1.0), "expected 1/2 < beta < 1"),
        (dict(activation="relu"), "activation is 'relu'; expected one of"),
        (dict(gradient="bptt"), "gradient is 'bptt'; expected 'rtrl' or 'truncated'"),
        (dict(sigma_w=-1.0), "sigma_w is -1.0; expected a finite number >= 0"),
        (dict(alpha=0.0), "alpha is 0.0; expected alpha > 0"),
    ],
)
def test_invalid_model_parameters_get_clear_errors(kwargs, message):
    with pytest.raises(ModelError, match=message) as exc:
        RNNConfig(**kwargs)
    assert "\n" not in str(exc.value)


def test_sigmoid_allows_larger_recurrent_weights():
    assert RNNConfig(activation="sigmoid", b_max=3.0).rho == pytest.approx(0.75)
