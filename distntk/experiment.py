"""An experiment: what to simulate and what to compare it with.

An :class:`Experiment` fixes a chain, a target, a model (:class:`~distntk.rnn.RNNConfig`), the
horizon ``T`` and recording grid ``times``, the window length ``L`` (docs/model.md#memory), the probe
windows, the design (:class:`Replicas`: widths and replica counts) and the limit's settings
(:class:`~distntk.limit.LimitConfig`).  Each spec table with more than a few keys is one frozen value
object under the name of its table, with the table's key names: ``[model] b_max`` is
``exp.model.b_max``, ``[replicas] n_init`` is ``exp.replicas.n_init``, ``[limit] tol`` is
``exp.limit.tol``, from the TOML file to the solver and the store's attributes.  It splits the replicas into work
units ``(width, init, data block)`` — one unit trains ``len(block)`` data
sequences that share one initialisation (arrays ``R x N``, docs/model.md#network) — and
computes a unit in-process with :meth:`Experiment.compute`, returning
``{"output": [data, time, probe], "risk": [data, time]}``; ``risk`` is the
stationary risk ``R(g) = 1/2 sum_z pi_L(z) (f(z) - g(z))^2`` over all histories
(present when ``record_risk``).  Nothing here knows who runs a unit: the Ray
layer (``service.py``) schedules them as opaque calls.

:meth:`Experiment.predictions` solves the limit once and returns an
``xarray.Dataset`` on ``(time, probe)``:

* ``h``: the limit ``h_t(z)`` (docs/model.md (4.5));
* ``nvar_poisson``, ``nvar_iid``: ``V_t(z, z)`` and its i.i.d. counterpart,
  i.e. the predicted ``N * Var(g^N_t(z) | theta)`` (docs/model.md (5.8));
* ``var_init_coef``: ``(E_t C_0 E_t^T)(z, z)``; the predicted
  ``Var_theta E[g | theta]`` is ``N^{1-2beta}`` times it (docs/model.md (5.12));
* ``risk_h``, ``nvar_risk_poisson``, ``nvar_risk_iid``, ``var_risk_init_coef`` on
  ``(time,)``: the same for the stationary risk, linearised around ``h_t``:
  ``delta R = l_t . delta g`` with ``l_t = -pi_L * (f - h_t)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import xarray as xr

from .chain import MarkovChain, window_chain
from .limit import MAX_HISTORIES, Limit, LimitConfig, solve_limit
from .rnn import ModelError, RNNConfig, run_replicas
from .target import Target

__all__ = ["ContinuousExperiment", "Experiment", "Replicas", "Unit", "unit_grid"]


@dataclass(frozen=True, order=True)
class Unit:
    """One work unit: ``width`` x one ``init`` x data seeds ``[data_start, data_stop)``.

    The replicas of a unit share one initialisation and are trained together
    (``Experiment.compute``); units order as tuples ``(width, init, data_start, data_stop)``.

    Parameters
    ----------
    width : int
        The width ``N``.
    init : int
        The initialisation index.
    data_start : int
        The first data seed.
    data_stop : int
        One past the last data seed.
    """

    width: int
    init: int
    data_start: int
    data_stop: int

    @property
    def data(self) -> range:
        """The unit's data seeds, ``range(data_start, data_stop)``."""
        return range(self.data_start, self.data_stop)


def unit_grid(widths: Iterable[int], n_init: int, n_data: int, block: int) -> list[Unit]:
    """All work units of a design, in the one fixed order (width, init, data block).

    Block ``k`` holds data seeds ``[k block, min((k + 1) block, n_data))``: the
    store's chunks along ``data`` follow the same cut.
    """
    return [Unit(int(N), int(i), lo, min(lo + block, n_data))
            for N in widths for i in range(n_init) for lo in range(0, n_data, block)]


@dataclass(frozen=True)
class Replicas:
    """The spec's ``[replicas]`` table, the design: one name per key, from the TOML file to the store.

    Parameters
    ----------
    widths : tuple of int
        The widths ``N``.
    n_init : int
        Initialisations per width.
    n_data : int
        Data sequences per initialisation.
    block : int, optional
        Data sequences per work unit.
    """

    widths: tuple[int, ...]
    n_init: int
    n_data: int
    block: int = 16

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))

    def units(self) -> list[Unit]:
        """All units, in the one fixed order (width, init, data block).

        Returns
        -------
        list of Unit
            ``len(widths) * n_init * ceil(n_data / block)`` units; block ``k`` holds the data
            seeds ``[k block, min((k + 1) block, n_data))``.
        """
        return unit_grid(self.widths, self.n_init, self.n_data, self.block)


_ERROR_DIMS = {**dict.fromkeys(("h", "nvar_poisson", "nvar_iid", "var_init_coef"), ("time", "probe")),
               **dict.fromkeys(("risk_h", "nvar_risk_poisson", "nvar_risk_iid", "var_risk_init_coef"), ("time",))}


def _with_errors(out: dict, pi_probe: np.ndarray) -> dict:
    """The Dataset variables of a limit estimated by Monte Carlo (sampled or AR(1)): every prediction with its
    standard error ``<name>_se``, the target ``f`` and ``pi_probe``."""
    data = {}
    for name, d in _ERROR_DIMS.items():
        data[name] = (d, out[name])
        data[name + "_se"] = (d, out[name + "_se"])
    data["f"] = (("probe",), out["f"])
    data["pi_probe"] = (("probe",), pi_probe)
    return data


@dataclass(frozen=True, eq=False)
class Experiment:
    """What to simulate and what to compare it with: a chain, a target, a model, a design and its limit.

    Normally built by ``load_spec`` (``Spec.experiment``), which validates every field; see the
    ``distntk.experiment`` module docstring for the units and the predictions.  The fields below are its
    constructor's parameters and its attributes.

    Parameters
    ----------
    chain : MarkovChain
        The data chain (docs/model.md#data).
    target : Target
        The target ``f`` of the last ``m`` inputs.
    model : RNNConfig
        Model and training hyper-parameters.
    T : float
        The horizon in training time ``t = k / N``.
    times : tuple of float
        The recording grid, sorted, within ``[0, T]``.
    L : int
        The window length (docs/model.md#memory): the length of the probe windows, and of the
        histories of the window limit and of the stationary risk.
    probes : numpy.ndarray
        The probe windows, ``(P, L)`` states, oldest first.
    replicas : Replicas
        The design, the spec's ``[replicas]``: widths, initialisations per width, data sequences
        per initialisation, data sequences per work unit.
    limit : LimitConfig, optional
        The limit's settings, the spec's ``[limit]`` (``limit.memory`` resolved to ``"window"`` or
        ``"sampled"``).
    seed : int, optional
        The root seed of every replica's ``SeedSequence``.
    engine : str, optional
        The training engine, a key of ``distntk.rnn.ENGINES`` (``"fast"`` or ``"reference"``).
    name : str, optional
        The experiment's name (the spec's).
    record_risk : bool, optional
        Also record every replica's stationary risk.
    """

    chain: MarkovChain
    target: Target
    model: RNNConfig
    T: float
    times: tuple[float, ...]
    L: int
    probes: np.ndarray  # (P, L) state windows
    replicas: Replicas
    limit: LimitConfig = LimitConfig()
    seed: int = 0
    engine: str = "fast"  # the training engine, distntk.rnn.ENGINES
    name: str = "experiment"
    record_risk: bool = True

    def units(self) -> list[Unit]:
        """All units, in the one fixed order (width, init, data block).

        Returns
        -------
        list of Unit
            ``len(widths) * n_init * ceil(n_data / block)`` units; block ``k`` holds the data
            seeds ``[k block, min((k + 1) block, n_data))``.
        """
        return self.replicas.units()

    def compute(self, unit: Unit) -> dict[str, np.ndarray]:
        """Train one unit's replicas, in this process.

        Deterministic in the seeds: the same unit gives the same bits anywhere.

        Parameters
        ----------
        unit : Unit
            The unit to compute.

        Returns
        -------
        dict of str to numpy.ndarray
            ``"output"``: ``(data, time, probe)``, the network's outputs on the probe windows;
            ``"risk"`` (when ``record_risk``): ``(data, time)``, the stationary risk.

        Raises
        ------
        ModelError
            If the training diverged (a non-finite output or risk).
        """
        source, probes, risk = self._replica_data()
        res = run_replicas(
            self.model, source, self.target, unit.width, self.T, self.times, probes,
            root=self.seed, width_key=unit.width, init=unit.init, data=list(unit.data), L=self.L,
            engine=self.engine, risk=risk,
        )
        out = {"output": res} if risk is None else {"output": res[0], "risk": res[1]}
        for name, values in out.items():
            if not np.all(np.isfinite(values)):
                raise ModelError(f"unit {unit} produced non-finite {name} values (the training diverged: check "
                                 "model.alpha, the inputs and the target's scale)")
        return out

    @cached_property
    def _risk_windows(self):
        """``(histories, pi_L, f)`` of the ``L`` window chain: the stationary risk's sum
        (docs/model.md (2.9); no limit needed)."""
        win = window_chain(self.chain, self.L, max_histories=MAX_HISTORIES)
        return win.histories, win.pi, self.target.on_windows(self.chain.inputs, win.histories)

    def _replica_data(self):
        """``(data source, probe windows, risk windows or None)`` that :meth:`compute` trains and evaluates on."""
        return self.chain, self.probes, (self._risk_windows if self.record_risk else None)

    def prepare(self) -> None:
        """Compute, once, what every unit needs before the experiment is shipped to the actors.

        The risk's windows (the window chain's histories, ``pi_L`` and ``f``) when
        ``record_risk``; ``compute`` would otherwise build them in every actor.
        """
        self._replica_data()

    def solve(self) -> Limit:
        """The solved window limit (computed once per experiment object).

        Returns
        -------
        Limit
            ``solve_limit`` for the experiment's model, chain, target and ``L``, with its
            ``[limit]`` settings (``self.limit``).
        """
        return self._solved

    @cached_property
    def _solved(self) -> Limit:
        return solve_limit(self.model, self.chain, self.target, L=self.L, limit=self.limit)

    def probe_labels(self) -> list[str]:
        """The probes' labels: each window's states as digits, oldest first (``"00110"``).

        Returns
        -------
        list of str
            One label per probe window, the store's ``probe`` coordinate.
        """
        return ["".join(str(int(s)) for s in z) for z in self.probes]

    def predictions(self, map_segments: Callable | None = None) -> xr.Dataset:
        """Limit and variance predictions on ``(time, probe)``; see the ``distntk.experiment`` module docstring.

        With ``memory = "sampled"`` the training side is the infinite past (``distntk.longmem``):
        ``map_segments`` computes the path segments, and every prediction comes with its Monte
        Carlo standard error ``<name>_se``.

        Parameters
        ----------
        map_segments : callable or None, optional
            Sampled limit only: ``map_segments(fn, problem, indices)`` returns
            ``[fn(problem, i) for i in indices]``, computed in any order and anywhere (the driver
            passes Ray actors); ``None`` computes them in this process.

        Returns
        -------
        xarray.Dataset
            On ``(time, probe)``: ``h``, ``nvar_poisson``, ``nvar_iid``, ``var_init_coef``,
            ``f`` and ``pi_probe``; on ``(time,)``: ``risk_h``, ``nvar_risk_poisson``,
            ``nvar_risk_iid``, ``var_risk_init_coef``.  Attributes: ``L``, ``memory_bound``,
            ``beta``, ``n_histories`` and the kernel's ``kernel_*`` (the sampled limit adds
            ``memory_*``).
        """
        if self.limit.memory == "sampled":
            return self._sampled_predictions(map_segments)
        lim = self.solve()
        idx = lim.window.index(self.probes)
        E = np.zeros((len(idx), lim.window.n_histories))
        E[np.arange(len(idx)), idx] = 1.0
        t = np.asarray(self.times, dtype=float)
        fv = lim.fluctuation_variances(t, E)
        diag = lambda a: np.diagonal(a, axis1=1, axis2=2)  # noqa: E731
        coords = {"time": t, "probe": self.probe_labels()}
        dims = ("time", "probe")
        r = lim.residual(t)  # (n_t, H)
        ell = -lim.window.pi * r  # gradient of the risk in g, one functional per time
        risk_p, risk_i, risk_0 = [], [], []
        for i, ti in enumerate(t):
            fv_r = lim.fluctuation_variances([ti], ell[i : i + 1])
            risk_p.append(fv_r["poisson"][0, 0, 0])
            risk_i.append(fv_r["iid"][0, 0, 0])
            risk_0.append(lim.init_variance([ti], ell[i : i + 1])[0, 0, 0])
        return xr.Dataset(
            {
                "risk_h": (("time",), 0.5 * (r**2) @ lim.window.pi),
                "nvar_risk_poisson": (("time",), np.array(risk_p)),
                "nvar_risk_iid": (("time",), np.array(risk_i)),
                "var_risk_init_coef": (("time",), np.array(risk_0)),
                "h": (dims, lim.h(t)[:, idx]),
                "nvar_poisson": (dims, diag(fv["poisson"])),
                "nvar_iid": (dims, diag(fv["iid"])),
                "var_init_coef": (dims, diag(lim.init_variance(t, E))),
                "f": (("probe",), lim.f[idx]),
                "pi_probe": (("probe",), lim.window.pi[idx]),
            },
            coords=coords,
            attrs={
                "L": self.L,
                "memory_bound": lim.memory_bound,
                "kernel_error": lim.kernel.error,
                "kernel_method": lim.kernel.method,
                "kernel_nodes": lim.kernel.n_nodes,
                "kernel_seconds": lim.kernel.seconds,
                "kernel_tol": lim.kernel.tol if lim.kernel.tol is not None else float("nan"),
                "n_histories": lim.window.n_histories,
                "beta": self.model.beta,
            },
        )

    def _sampled_predictions(self, map_segments: Callable | None) -> xr.Dataset:
        from .longmem import solve_sampled

        sl = solve_sampled(self.model, self.chain, self.target, self.limit, seed=self.seed,
                           map_segments=map_segments)
        t = np.asarray(self.times, dtype=float)
        out = sl.predict(t, self.probes, self.L)
        data = _with_errors(out, out["pi_probe"])
        corr_h = float(np.max(np.abs(out["h_corr"])))
        corr_v = float(np.max(np.abs(out["nvar_poisson_corr"]) / np.abs(out["nvar_poisson"]).clip(1e-300)))
        pb = sl.problem
        return xr.Dataset(
            data,
            coords={"time": t, "probe": self.probe_labels()},
            attrs={
                "L": self.L,
                "memory_method": "sampled",
                # the memory truncation as measured: the infinite-past limit minus the L0-window one
                "memory_bound": corr_h,
                "memory_correction_h": corr_h,
                "memory_correction_nvar_rel": corr_v,
                "memory_L0": pb.L0,
                "memory_basis_L": int(pb.basis.shape[1]),
                "memory_basis_rank": pb.k,
                "memory_basis_residual": sl.basis_residual,
                "memory_segments": sl.n_segments,
                "memory_path_steps": sl.path_steps,
                "memory_lag_window": sl.lag_window,
                "memory_seconds": sl.seconds,
                "kernel_error": pb.kernel_error,
                "kernel_method": pb.kernel_method,
                "kernel_nodes": len(pb.wts),
                "kernel_seconds": float("nan"),
                "kernel_tol": self.limit.tol if self.limit.resolution is None else float("nan"),
                "n_histories": int(pb.basis.shape[0]),
                "beta": self.model.beta,
            },
        )


@dataclass(frozen=True, eq=False)
class ContinuousExperiment(Experiment):
    """An experiment on a continuous-state source (docs/model.md#ar1): the Gaussian AR(1)
    (``[chain] kind = "ar1"``) or a user's sampler (``kind = "sampler"``, docs/model.md#sampler).
    ``probes`` are value windows ``(P, L, d)``; ``chain`` is a finite stand-in used only to choose ``L`` and
    check the target (the AR(1)'s 2-state Rouwenhorst chain, the sampler's 2-quantile chain); the replicas
    train on the source's stream, the risk is the average over 1024 stationary windows drawn once from the
    experiment's seed, and the predictions come from :func:`distntk.continuous.continuous_limit`."""

    source: object = None  # a distntk.continuous.Source

    @property
    def ar(self):
        """The AR(1) of an AR(1) experiment (``None`` for a sampler)."""
        return self.source if getattr(self.source, "kind", None) == "ar1" else None

    @cached_property
    def _inputs(self):
        from .continuous import continuous_inputs

        return continuous_inputs(self.source, self.target, self.probes, self.L, seed=self.seed)

    def _replica_data(self):
        inp = self._inputs
        return inp, inp.probes, (inp.risk if self.record_risk else None)

    def probe_labels(self) -> list[str]:
        from .continuous import probe_labels

        return probe_labels(self.probes)

    def predictions(self, map_segments: Callable | None = None) -> xr.Dataset:
        from .continuous import continuous_limit

        lim = continuous_limit(self.model, self.source, self.target, self.L, self.limit, seed=self.seed)
        t = np.asarray(self.times, dtype=float)
        out = lim.predict(t, self.probes)
        data = _with_errors(out, np.full(len(self.probes), np.nan))  # a density point: no probability
        extra = {}
        if self.source.kind != "ar1":  # the AR(1)'s rate is max |phi|; its stores keep the attributes they had
            extra = {"memory_mixing": lim.mixing,
                     "memory_mixing_from": "chain.mixing" if self.source.mixing is not None else "autocorrelation"}
        return xr.Dataset(
            data,
            coords={"time": t, "probe": self.probe_labels()},
            attrs={
                "L": self.L,
                "memory_method": self.source.kind,
                "memory_bound": self.model.rho**self.L,
                "memory_basis_rank": int(lim.V.shape[1]),
                "memory_basis_residual": lim.basis_residual,
                "memory_segments": lim.n_segments,
                "memory_path_steps": int(lim.c.shape[1]),
                "memory_lag_window": lim.lag_window,
                **extra,
                "memory_seconds": lim.seconds,
                "kernel_error": lim.kernel_error,
                "kernel_method": lim.kernel_method,
                "kernel_nodes": len(lim.wts),
                "kernel_seconds": float("nan"),
                "kernel_tol": self.limit.tol if self.limit.resolution is None else float("nan"),
                "n_histories": 0,
                "beta": self.model.beta,
            },
        )
