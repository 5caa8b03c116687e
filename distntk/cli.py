"""Command line: ``distntk run``, ``distntk query``, ``distntk report`` and ``distntk demo``.

    distntk run SPEC [--store PATH|URL] [--address ADDR] [--actors K] [--storage-option KEY=VALUE ...]
                     [--allow-code] [--max-core-hours H]
    distntk query STORE [--width N] [--time t] [--probe k] [--format table|csv|json] [--storage-option ...]
    distntk report STORE [--out DIR] [--storage-option ...]   (default DIR: reports/<store name>)
    distntk verify STORE [--storage-option ...]   (damaged units one per line, exit 1 if any; outlier
                                                   flags as "flag: ..." lines, kept, exit 0 on their own)
    distntk demo [--store PATH] [--out DIR]     (run jobs/quickstart.toml, query table, report)

Stores are local paths or fsspec URLs (``s3://``, ``gs://``, ``memory://``).  The
filesystem backend reads its standard environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``GOOGLE_APPLICATION_CREDENTIALS``, ...);
``--storage-option KEY=VALUE`` (repeatable) passes keyword arguments to it
instead, the value read as JSON when it parses (``anon=true``,
``client_kwargs={"region_name": "eu-west-1"}``) and as a string otherwise.
Their values are not written to the store's history.

``run`` prints its cost estimate (:mod:`distntk.cost`) before it starts and
refuses (exit 2) a ``memory://`` store (its results would vanish with the process),
a spec above ``--max-core-hours`` (default 100) or whose work
unit does not fit in an actor's memory (this machine's memory over the number
of actors); it refuses a ``module:function`` target or a ``kind = "sampler"``
chain (code) unless ``--allow-code``.  ``query`` and ``report`` on a damaged store print one
warning line naming the damaged units (:mod:`distntk.verify`) and leave them
out; units flagged as outliers get one ``distntk: note:`` line and stay in.

Errors in user input (specs, stores, chains, models, targets, selections)
print one line ``distntk: error: ...`` on stderr and exit with 2; a run that
fails for another reason exits with 1, also on one line.  Output into a pipe
whose reader has gone (``distntk query STORE | head``) ends quietly with 141.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from ._text import one_line, printable
from .cost import DEFAULT_MAX_CORE_HOURS
from .errors import DistntkError

__all__ = ["main"]

_QUICKSTART = "jobs/quickstart.toml"


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line error format of the rest of the CLI, and no abbreviated options."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # --stor=x is an error, not a guess
        super().__init__(*args, **kwargs)

    def error(self, message):  # noqa: D401 - argparse API
        raise _UsageError(f"{message} (see {self.prog} --help)")


class _UsageError(DistntkError):
    def __init__(self, msg: str, then: str = ""):
        super().__init__(msg)
        self.then = then  # a command that works, printed whole after the (cut) message


def _fail(msg: str, code: int, then: str = "") -> int:
    then = f"; {then}" if then and then.isprintable() else ""
    print(f"distntk: error: {one_line(msg)}{then}", file=sys.stderr)
    return code


def _key_values(pairs: list[str], flag: str, expected: str) -> dict:
    """``["k=v", ...]`` -> ``{k: v}``, each value read as JSON when it parses, else kept as a string."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise _UsageError(f"{flag} {pair}: expected {expected}")
        if key.strip() in out:
            raise _UsageError(f"{flag} {key.strip()}: given twice; give each key once")
        try:
            out[key.strip()] = json.loads(value)
        except RecursionError:
            raise _UsageError(f"{flag} {key.strip()}: the value is nested too deeply") from None
        except ValueError:
            out[key.strip()] = value
    return out


def _storage_options(pairs: list[str] | None) -> dict | None:
    """``--storage-option`` pairs as the fsspec backend's keyword arguments (``None`` when none given)."""
    if not pairs:
        return None
    return _key_values(pairs, "--storage-option", "KEY=VALUE, e.g. endpoint_url=http://127.0.0.1:9000")


def _redacted(argv: list[str]) -> list[str]:
    """``argv`` with the values of ``--storage-option`` hidden (they may hold credentials)."""

    def is_flag(name: str) -> bool:  # argparse also takes unambiguous abbreviations: --stora ... --storage-option
        return len(name) > len("--stor") and "--storage-option".startswith(name)

    out, hide = [], False
    for a in argv:
        flag, eq, pair = a.partition("=")
        if hide:
            out.append(a.partition("=")[0] + "=...")
        elif eq and is_flag(flag):
            out.append(f"{flag}={pair.partition('=')[0]}=...")
        else:
            out.append(a)
        hide = is_flag(a)
    return out


def _version() -> str:
    from . import __version__

    return __version__


def _quickstart_path() -> Path:
    """The quickstart spec shipped inside the package (``distntk/jobs/quickstart.toml``, the same bytes as
    the checkout's ``jobs/quickstart.toml``): ``distntk demo`` runs from any directory."""
    return Path(__file__).resolve().parent / _QUICKSTART


class _Phases:
    """Says what ``distntk run`` is doing, so that nothing is silent for more than :data:`_QUIET_S` seconds.

    ``phases(text)`` prints ``distntk run: text ...`` and, while no other line follows, ``still text (N s)``
    every :data:`_QUIET_S` seconds from a daemon thread; ``phases(None)`` ends the phase (a progress bar
    takes over).
    """

    def __init__(self, where: str):
        import threading

        self.where, self._lock, self._text, self._since, self._said = where, threading.Lock(), None, 0.0, False
        self._wake = threading.Event()
        threading.Thread(target=self._tick, daemon=True, name="distntk-phases").start()

    def __call__(self, text: str | None, quiet: bool = False) -> None:
        """Begin phase ``text`` (``None``: no phase); ``quiet``: printed only once it lasts :data:`_QUIET_FIRST_S`
        (a run that fails on bad input while it reads the spec says one line, its error)."""
        if text == "starting Ray":
            text = f"starting Ray ({self.where})"
        with self._lock:
            self._text, self._since, self._said = text, time.monotonic(), not quiet
            if text and not quiet:
                print(f"distntk run: {text} ...", file=sys.stderr, flush=True)

    def _tick(self) -> None:
        last = time.monotonic()
        while not self._wake.wait(0.25):
            with self._lock:
                now = time.monotonic()
                if self._text and now - max(last, self._since) >= (_QUIET_S if self._said else _QUIET_FIRST_S):
                    print(f"distntk run: {'still ' if self._said else ''}{self._text} ({now - self._since:.0f} s)",
                          file=sys.stderr, flush=True)
                    last, self._said = now, True

    def close(self) -> None:
        self(None)
        self._wake.set()


_QUIET_S = 1.5  # checked every 0.25 s: a line at least every 2 s
_LIMIT_NOTE_S = 10.0  # a window limit estimated above this many CPU-seconds is announced before it is solved
_QUIET_FIRST_S = 4.0  # reading the spec imports numba and xarray (about 1.7 s): bad input must stay one line


def _run(args) -> int:
    """``distntk run SPEC``: one spec into its store, or a sweep's members into ``ROOT/<member>.zarr``."""
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    where = f"Ray cluster {address}" if address else "an embedded local Ray"
    phases = _Phases(where)
    try:
        return _run_phased(args, address, where, phases)
    finally:
        phases.close()


def _run_phased(args, address: str | None, where: str, phases: _Phases) -> int:
    phases(f"preparing the run of {args.spec} (spec, cost, store, lease)", quiet=True)
    from .cost import check_cost, estimate_cost, machine_memory, total_cost
    from .driver import run, run_sweep
    from .spec import load_spec
    from .store import SpecChanged
    from .sweep import load_sweep

    if args.actors is not None and args.actors < 1:
        raise _UsageError(f"--actors {args.actors}: expected an integer >= 1")
    if not args.max_core_hours > 0:
        raise _UsageError(f"--max-core-hours {args.max_core_hours:g}: expected a number > 0")
    sweep = load_sweep(args.spec, allow_code=args.allow_code)
    if sweep is None:
        spec = load_spec(args.spec, allow_code=args.allow_code)
        members, store = [("", spec)], args.store or spec.store
        what, where_to = f"spec {spec.name} ({spec.hash[:12]})", f"store {store}"
    else:
        members, store = [(f"member {m.name}: ", m.spec) for m in sweep.members], args.store or f"stores/{sweep.name}"
        what, where_to = f"sweep {sweep.name} ({len(sweep.members)} members)", f"root {store}"
    if str(store).lower().startswith("memory://"):
        raise _UsageError(f"--store {store}: a memory:// store lives in this process only; the results of the run "
                          "would vanish when it ends (use a path or an s3:// or gs:// URL)")
    if address:  # a wrong address is one line (within its 10 s deadline): before the cost, a lease, a store
        from .service import check_address

        phases(None)
        check_address(address)
    phases("estimating the cost (choosing the limit's quadrature rule)", quiet=True)
    costs = []
    for prefix, spec in members:
        for w in spec.warnings:
            print(f"distntk run: warning: {prefix}{one_line(w)}", file=sys.stderr)
        e = spec.experiment
        costs.append(estimate_cost(e))  # the limit's rule is chosen here (and reused by the solve)
        lim = costs[-1].limits[0]
        if e.limit.memory == "sampled":
            print(f"distntk run: {prefix}limit over the infinite past (limit.memory, rho = {e.model.rho:g}): a basis "
                  f"window of L = {e.limit.basis_L}, then {e.limit.segments} path segments of "
                  f"{e.limit.segment_steps} steps on the "
                  f"actors, when the store is created: {lim.describe()}", file=sys.stderr)
        elif lim.core_seconds >= _LIMIT_NOTE_S:
            print(f"distntk run: {prefix}{lim.describe()}, when the store is created", file=sys.stderr)
    cost = total_cost(costs)  # refused before any store or Ray
    check_cost(cost, args.max_core_hours, machine_memory() / (1 if address else args.actors or os.cpu_count() or 1))
    options = _storage_options(args.storage_option)

    def announce(todo: int, total: int) -> None:
        phases(None)
        plan = f"{todo} of {total} units to compute on {where}" if todo else f"all {total} units already done"
        print(f"distntk run: {what}, {where_to}: {plan}", file=sys.stderr)
        if todo:
            print(f"distntk run: estimate for the whole {what.split()[0]}: {cost.describe()}", file=sys.stderr)

    shipped = _shipped_code([spec for _, spec in members]) if args.address else None
    kwargs = dict(address=address, actors=args.actors, progress=not args.no_progress, announce=announce,
                  command="distntk " + " ".join(shlex.quote(a) for a in _redacted(args.argv)),
                  storage_options=options, runtime_env=shipped, check=args.check)
    t0 = time.perf_counter()
    kwargs["phase"] = phases
    try:
        reps = [run(spec, store, **kwargs)] if sweep is None else run_sweep(sweep, store, **kwargs)
    except SpecChanged as exc:
        if sweep is not None:
            raise
        then = f"to run this spec into a new store: {_with_store(args.argv, exc.fresh)}"
        raise _UsageError(exc.reason, then=then) from None
    phases(None)
    done = [r for r in reps if r.summary is not None]
    if done:
        s = done[0].summary  # one actor pool served every store of the run
        nodes = ", ".join(f"{n[:12]} {c}" for n, c in sorted(s.nodes.items()))
        over = f" over {len(done)} members" if sweep is not None else ""
        print(f"distntk run: {sum(r.computed for r in reps)} units ({s.items} replicas) computed{over}, "
              f"{sum(r.skipped for r in reps)} already done, {s.retried} retried; {s.actors} actors on "
              f"{len(s.nodes)} node(s) [{nodes}]; {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if args.print_query:
        if sweep is None:
            return _print_query(store, fmt="table", storage_options=options)
        return _print_catalog(store, options)
    same = " (with the same --storage-option flags)" if options else ""
    print(f"query it with: distntk query {shlex.quote(store)}{same}; report: distntk report {shlex.quote(store)}{same}",
          file=sys.stderr)
    return 0


def _with_store(argv: list[str], store: str) -> str:
    """The command ``distntk ARGV`` with ``--store STORE`` instead of its own, shell-quoted (option values hidden)."""
    out, skip = [], False
    for a in _redacted(argv):
        if skip or a == "--store" or a.startswith("--store="):
            skip = a == "--store"
            continue
        out.append(a)
    return "distntk " + shlex.join([*out, "--store", store])


def _open_checked(path, storage_options=None):
    """The store as an in-memory Dataset without its damaged units, after one warning line naming them."""
    from .verify import damage_warning, open_checked

    ds, damaged = open_checked(path, storage_options)
    if damaged:
        print(f"distntk: warning: {damage_warning(damaged)}", file=sys.stderr)
    if ds.attrs.get("distntk_flagged"):
        print(f"distntk: note: {ds.attrs['distntk_flagged']}", file=sys.stderr)
    return ds


def _shipped_code(specs: list) -> dict | None:
    """The Ray ``runtime_env`` that ships the modules of the ``module:function`` targets and
    ``kind = "sampler"`` chains of ``specs`` (a run's, or every member's of a sweep) to the cluster
    (``--address``).

    The workers unpickle them by reference, so their modules must import there; a
    cluster joined from a laptop does not have them (``ray job submit --working-dir`` would).
    Each module's file (or its top-level package's directory) goes in ``py_modules``, once.
    """
    names = [name for spec in specs for name in (spec.experiment.target.name,
                                                 getattr(getattr(spec.experiment, "source", None), "name", ""))]
    paths = []
    for name in names:
        if ":" not in str(name):
            continue
        top = name.partition(":")[0].split(".")[0]
        mod = sys.modules.get(top)
        path = getattr(mod, "__path__", [None])[0] if hasattr(mod, "__path__") else getattr(mod, "__file__", None)
        if path and path not in paths:
            paths.append(path)
    return {"py_modules": paths} if paths else None


def _print_query(path, width=None, time_=None, probe=None, fmt="table", storage_options=None) -> int:
    from .query import format_records, progress, summary

    ds = _open_checked(path, storage_options)
    print(format_records(ds, summary(ds, width, time_, probe), progress(ds), fmt))
    return 0


def _verify(args) -> int:
    from .verify import verify

    found = verify(args.store, _storage_options(args.storage_option))
    for line in found.problems:
        print(line)
    for line in found.flags:
        print(f"flag: {line}")
    flagged = f"; {len(found.flags)} unit(s) flagged as outliers (kept: not damage)" if found.flags else ""
    print(f"distntk verify: {len(found.problems)} problem(s) in {args.store}{flagged}" if found.problems
          else f"distntk verify: {args.store}: every done unit intact{flagged}", file=sys.stderr)
    return 1 if found.problems else 0


def _query(args) -> int:
    from .catalog import is_catalog_root

    options = _storage_options(args.storage_option)
    if is_catalog_root(args.store, options):
        return _print_catalog(args.store, options, args.width, args.time, args.probe, args.format, args.where)
    if args.where:
        raise _UsageError(f"--where selects stores of a catalog; {args.store} is one store")
    return _print_query(args.store, args.width, args.time, args.probe, args.format, options)


def _where(pairs: list[str] | None) -> dict:
    """``--where`` pairs: ``["model.beta=0.6", ...]`` -> ``{"model.beta": 0.6}``."""
    return _key_values(pairs or [], "--where", "KEY=VALUE with a dotted spec key, e.g. model.beta=0.6")


def _print_catalog(root, options=None, width=None, time_=None, probe=None, fmt="table", where=None) -> int:
    from .catalog import format_catalog, open_catalog

    cat = open_catalog(root, options).where(**_where(where))
    if cat.problems:
        print(f"distntk: warning: {len(cat.problems)} member(s) missing or unreadable: "
              f"{one_line('; '.join(f'{n}: {why}' for n, why in sorted(cat.problems.items())))}", file=sys.stderr)
    rows = cat.rows(width, time_, probe)
    for name, why in sorted(cat.damaged.items()):
        print(f"distntk: warning: {printable(name)}: {one_line(why)}", file=sys.stderr)
    for name, why in sorted(cat.flagged.items()):
        print(f"distntk: note: {printable(name)}: {one_line(why)}", file=sys.stderr)
    print(format_catalog(cat, rows, fmt))
    return 0


def _add_storage_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage-option", action="append", metavar="KEY=VALUE",
                   help="keyword argument for the store's fsspec backend, repeatable, e.g. "
                        "endpoint_url=http://127.0.0.1:9000 (default: the backend reads its standard "
                        "environment, e.g. AWS_ENDPOINT_URL and AWS_ACCESS_KEY_ID for s3://)")


def _store_name(store: str) -> str:
    """``stores/quickstart.zarr`` -> ``quickstart`` (also for URLs); the default report folder's name."""
    name = str(store).rstrip("/").rsplit("/", 1)[-1]
    return name.removesuffix(".zarr") or "store"


def _write_report(store: str, out: str | None, storage_options: dict | None = None):
    """Write the report of ``store``; returns ``(path, summary lines)``."""
    from .report import write_report

    ds = _open_checked(store, storage_options)  # a bad store fails here, before anything is written
    out = out or str(Path("reports") / _store_name(store))
    lines = []
    try:
        return write_report(ds, out, source=store, summary_out=lines), lines
    except OSError as exc:
        raise _UsageError(f"cannot write the report to {out}: {exc.strerror or exc}") from None


def _report(args) -> int:
    from .catalog import is_catalog_root, open_catalog

    options = _storage_options(args.storage_option)
    if is_catalog_root(args.store, options):
        from .report import write_sweep_report

        out = args.out or str(Path("reports") / _store_name(args.store))
        try:
            print(write_sweep_report(open_catalog(args.store, options), out))
        except OSError as exc:
            raise _UsageError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
        return 0
    print(_write_report(args.store, args.out, options)[0])
    return 0


def _demo(args) -> int:
    from .spec import load_spec

    spec = _quickstart_path()
    t0 = time.perf_counter()
    store = args.store or load_spec(spec).store
    code = main(["run", str(spec), "--print-query", "--store", store])
    if code != 0:
        return code
    path, lines = _write_report(store, args.out)
    print("\nreport summary\n\n" + "\n".join(lines) + "\n")
    print(f"demo wall time {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    print(f"report: {path}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="distntk", description="Distributed Monte Carlo for the kernel limit of RNNs "
                     "trained on ergodic data sequences.")
    parser.add_argument("--version", action="version", version=f"distntk {_version()}",
                        help="print distntk's version and exit")
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=_Parser, metavar="COMMAND",
                                help="run, query, report, verify or demo; COMMAND --help for its options")

    p = sub.add_parser("run", help="compute an experiment spec into a Zarr store on Ray (resumes)")
    p.add_argument("spec", help="TOML experiment spec, e.g. jobs/quickstart.toml, or a sweep spec ([sweep] table)")
    p.add_argument("--store", help="store path or fsspec URL (default: the spec's `store`); for a sweep, the root "
                   "that holds one store per member (default: stores/<sweep name>)")
    p.add_argument("--address", help="Ray cluster to join: the HOST:PORT that `ray start --head` prints, "
                   "ray://HOST:PORT or auto (default: $RAY_ADDRESS, else an embedded local Ray); checked first: "
                   "a wrong one is one error line, before any limit or store")
    p.add_argument("--actors", type=int, help="number of Ray actors (default: one per CPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--check", action="store_true",
                   help="also read every done unit's chunks and recompute those that do not match their records "
                        "(repairs a damaged store bit for bit); without it a resume reads the records only")
    p.add_argument("--print-query", action="store_true", help="print the query table when done")
    p.add_argument("--allow-code", action="store_true",
                   help="allow a 'module:function' target or chain.sampler: importing it runs that module's code (see "
                        "docs/security.md); refused without this flag")
    p.add_argument("--max-core-hours", type=float, default=DEFAULT_MAX_CORE_HOURS, metavar="H",
                   help=f"refuse a spec whose estimated cost exceeds H core-hours (default {DEFAULT_MAX_CORE_HOURS:g})")
    _add_storage_option(p)

    q = sub.add_parser("query", help="progress and simulation vs limit vs predictions of a store, or of every "
                       "store under a root (a sweep, a folder of stores)")
    q.add_argument("store", help="store path or fsspec URL, or a root holding stores")
    q.add_argument("--where", action="append", metavar="KEY=VALUE",
                   help="only the stores of a root whose spec key KEY equals VALUE (JSON; a number also "
                        "matches as .65 or \"0.65\"), repeatable with distinct keys, e.g. model.beta=0.65; "
                        "a key no store has is an error")
    q.add_argument("--width", type=int, help="one width N")
    q.add_argument("--time", type=float, help="one time t of the grid")
    q.add_argument("--probe", help="one probe: its label (the window of states, e.g. 000000), or its index 0, 1, ... "
                   "written without leading zeros; a value of the labels' form is always a label")
    q.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="table (default, for reading), csv (one row per line) or json (progress and rows)")
    _add_storage_option(q)

    r = sub.add_parser("report", help="write the Markdown report (plots, verdicts, rates) of a store, or the "
                       "sweep report of a root")
    r.add_argument("store", help="store path or fsspec URL, or a root holding stores")
    r.add_argument("--out", help="output directory (default: reports/<store name>)")
    _add_storage_option(r)

    v = sub.add_parser("verify", help="check every done unit of a store (chunks, checksums, finite values, "
                       "predictions); damaged units one per line, exit 1 if any; outlier flags as 'flag: ...' "
                       "lines (kept in every estimate, exit 0 if nothing else)")
    v.add_argument("store", help="store path or fsspec URL")
    _add_storage_option(v)

    d = sub.add_parser("demo", help=f"run {_QUICKSTART} through Ray into a store, print the query table, "
                       "write the report")
    d.add_argument("--store", help="store path (default: the spec's, stores/quickstart.zarr)")
    d.add_argument("--out", help="report directory (default: reports/<store name>)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
        args.argv = argv
        for name in ("store", "out"):  # ~ and file:// in paths: the shell does not expand a quoted "~/x"
            if getattr(args, name, None):
                from .store.locations import location

                setattr(args, name, location(args.__dict__[name]))
        return {"run": _run, "query": _query, "report": _report, "verify": _verify, "demo": _demo}[args.cmd](args)
    except KeyboardInterrupt:
        return _fail("interrupted; rerun the same command to resume (done units are kept)", 130)
    except BrokenPipeError:  # `distntk query STORE | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141
    except DistntkError as exc:  # every error distntk raises for its users: one line, its exit code
        return _fail(str(exc), exc.exit_code, getattr(exc, "then", ""))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
