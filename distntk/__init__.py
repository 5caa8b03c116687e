"""distntk: Monte Carlo for the kernel limit of RNNs trained on ergodic data sequences.

See ``docs/model.md`` for the mathematics; each module's
docstring names the section it implements.

``distntk.estimate`` is the estimator *function* (the module's other entry
points are exported beside it; ``from distntk.estimate import ...`` reaches the
module).  The report (plots, Markdown) is ``distntk.report.write_report``; it
is not imported here, so that ``import distntk`` on a Ray worker does not load
matplotlib.
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from .catalog import Catalog, open_catalog
from .chain import ChainError, MarkovChain, markov_chain, window_chain
from .estimate import EstimateError, convergence_rates, estimate, missing_units, variance_components
from .experiment import Experiment, Unit
from .limit import Limit, solve_limit
from .memory import memory_contraction
from .rnn import ModelError, RNNConfig, run_replicas
from .spec import Spec, SpecError, load_spec
from .store import StoreError, open_store
from .target import Target, make_target

try:
    __version__ = _version("distntk")
except _PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"

__all__ = [
    "Catalog",
    "ChainError",
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
