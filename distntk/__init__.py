"""distntk: Monte Carlo for the kernel limit of RNNs trained on ergodic data sequences.

See ``MODEL.md`` (shipped beside the project) for the mathematics; each module's
docstring names the section it implements.
"""

from .chain import ChainError, MarkovChain, markov_chain, window_chain
from .experiment import Experiment, Unit
from .limit import Limit, solve_limit
from .rnn import ModelError, RNNConfig, run_replicas
from .spec import Spec, SpecError, load_spec
from .store import StoreError, open_store
from .target import Target, make_target

__version__ = "0.1.0"

__all__ = [
    "ChainError",
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
    "load_spec",
    "make_target",
    "markov_chain",
    "open_store",
    "run_replicas",
    "solve_limit",
    "window_chain",
]
