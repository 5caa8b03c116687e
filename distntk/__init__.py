"""distntk: Monte Carlo for the kernel limit of RNNs trained on ergodic data sequences.

See ``docs/model.md`` for the mathematics; each module's
docstring names the section it implements.

``distntk.estimate`` is the estimator function; it and the estimator's other
entry points live in :mod:`distntk.estimator`.  The report (plots, Markdown) is ``distntk.report.write_report``; it
is not imported here, so that ``import distntk`` on a Ray worker does not load
matplotlib.
"""

import importlib as _importlib
from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("distntk")
except _PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"

# The public names, imported on first use (PEP 562): ``import distntk`` and the command line's ``--help``
# load neither xarray, zarr, scipy, numba nor Ray.
_LAZY = {
    "Catalog": "catalog", "open_catalog": "catalog",
    "DistntkError": "errors",
    "ChainError": "chain", "MarkovChain": "chain", "markov_chain": "chain", "window_chain": "chain",
    "EstimateError": "estimator", "convergence_rates": "estimator", "estimate": "estimator",
    "extrapolate": "estimator", "missing_units": "estimator", "variance_components": "estimator",
    "Experiment": "experiment", "Replicas": "experiment", "Unit": "experiment",
    "Limit": "limit", "LimitConfig": "limit", "solve_limit": "limit",
    "memory_contraction": "memory",
    "ModelError": "rnn", "RNNConfig": "rnn", "run_replicas": "rnn",
    "Spec": "spec", "SpecError": "spec", "load_spec": "spec",
    "StoreError": "store", "open_store": "store",
    "Target": "target", "make_target": "target",
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'distntk' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "Catalog",
    "ChainError",
    "DistntkError",
    "EstimateError",
    "Experiment",
    "Limit",
    "LimitConfig",
    "MarkovChain",
    "ModelError",
    "RNNConfig",
    "Replicas",
    "Spec",
    "SpecError",
    "StoreError",
    "Target",
    "Unit",
    "convergence_rates",
    "estimate",
    "extrapolate",
    "load_spec",
    "make_target",
    "markov_chain",
    "memory_contraction",
    "missing_units",
    "open_catalog",
    "open_store",
    "run_replicas",
    "solve_limit",
    "variance_components",
    "window_chain",
]
