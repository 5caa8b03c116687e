"""distntk: Monte Carlo for the kernel limit of RNNs trained on ergodic data sequences.

See ``docs/model.md`` for the mathematics; each module's
docstring names the section it implements.

``distntk.estimate`` is the estimator *function* (the module's other entry
points are exported beside it; ``from distntk.estimate import ...`` reaches the
module).  The report (plots, Markdown) is ``distntk.report.write_report``; it
is not imported here, so that ``import distntk`` on a Ray worker does not load
matplotlib.
"""

import importlib as _importlib
import sys as _sys
import types as _types
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
    "EstimateError": "estimate", "convergence_rates": "estimate", "estimate": "estimate",
    "extrapolate": "estimate", "missing_units": "estimate", "variance_components": "estimate",
    "Experiment": "experiment", "Unit": "experiment",
    "Limit": "limit", "solve_limit": "limit",
    "memory_contraction": "memory",
    "ModelError": "rnn", "RNNConfig": "rnn", "run_replicas": "rnn",
    "Spec": "spec", "SpecError": "spec", "load_spec": "spec",
    "StoreError": "store", "open_store": "store",
    "Target": "target", "make_target": "target",
}


class _Package(_types.ModuleType):
    """The package module: public names resolved lazily, and ``distntk.estimate`` always the function.

    Importing the submodule ``distntk.estimate`` would bind the package attribute ``estimate`` to the
    module; that binding is not kept, so the attribute stays the estimator function (the module is
    reached with ``from distntk.estimate import ...``).
    """

    def __getattr__(self, name):
        if name not in _LAZY:
            raise AttributeError(f"module 'distntk' has no attribute {name!r}")
        value = getattr(_importlib.import_module(f".{_LAZY[name]}", __name__), name)
        if name != "estimate":
            super().__setattr__(name, value)
        return value

    def __setattr__(self, name, value):
        if name == "estimate" and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package

__all__ = [
    "Catalog",
    "ChainError",
    "DistntkError",
    "EstimateError",
    "Experiment",
    "Limit",
    "MarkovChain",
    "ModelError",
    "RNNConfig",
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
