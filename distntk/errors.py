"""The one base of every error distntk raises for its users: :class:`DistntkError`.

Each error says in one line what was expected; :attr:`DistntkError.exit_code` is what the command
line exits with (2: the input or the environment is wrong, fix it and run again; 1: the run itself
failed).  Each module defines its own subclass (``SpecError``, ``StoreError``, ...), also a subclass of
the builtin it has always been (``ValueError`` or ``RuntimeError``), so ``except ValueError`` keeps
working.  No imports here: every module, science or I/O, may use it.
"""

from __future__ import annotations

__all__ = ["DistntkError"]


class DistntkError(Exception):
    """An error with a one-line message for the user; ``exit_code`` 2 (bad input) unless a subclass says 1."""

    exit_code: int = 2
    """What the command line exits with: 2, the input or the environment is wrong (fix it and run again);
    1, the run itself failed."""

    def __init__(self, *args, key: str | None = None):
        super().__init__(*args)
        self.key = key  # the input this error is about, when it is one ("b_max", "transition"): a spec
        # error names it (model.b_max) from here, never from the message's text
