"""Offline validators for the deployment files in ``deploy/``.

    python deploy/check.py deploy/aws.yaml deploy/gcp.yaml deploy/kuberay/*.yaml deploy/Dockerfile

Each file goes through the checks its real tool applies, as far as they run without a
cloud account or a cluster:

* Ray cluster launcher YAML (a mapping with ``provider``):
  ``ray-schema`` -- the JSON schema inside the installed ray package
  (``ray/autoscaler/ray-schema.json``), on the file as written;
  ``ray-config`` -- Ray's own ``prepare_config`` (merge with the provider's
  defaults.yaml) and ``validate_config``, what ``ray up`` runs before it calls the cloud;
  ``ec2-run-instances`` (AWS only) -- every ``node_config`` against botocore's model of
  EC2 RunInstances, the call Ray hands it to (skipped, and said so, without botocore).
  GCE has no offline model: it checks ``node_config`` at launch.
* KubeRay manifest (``apiVersion: ray.io/v1``): ``kuberay-schema`` --
  ``deploy/kuberay/schema.json``, a minimal schema of the fields used that rejects
  unknown fields, as ``kubectl apply`` does against the real CRD.
* Dockerfile: ``dockerfile`` -- known instructions only; a single stage from
  ``rayproject/ray:<ray>-py3XX[-cpu]`` with that Ray inside pyproject's ``ray``
  requirement and that Python inside ``requires-python``; a USER before the first RUN
  and never root; no ADD of URLs; the version label equal to pyproject's version.

One line per (file, check): ``OK``, ``SKIP (reason)``, or ``FAIL`` followed by one
indented line per error. Exit status 1 when any check failed, 2 on unreadable input.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = [
    "Result",
    "check_file",
    "dockerfile_errors",
    "ec2_node_config_errors",
    "kuberay_errors",
    "launcher_ray_errors",
    "launcher_schema_errors",
    "main",
    "parse_dockerfile",
]

REPO = Path(__file__).resolve().parent.parent
KUBERAY_SCHEMA = Path(__file__).resolve().parent / "kuberay" / "schema.json"


@dataclass(frozen=True)
class Result:
    """Outcome of one check on one file; ``skipped`` carries the reason when it did not run."""

    path: str
    check: str
    errors: tuple[str, ...] = ()
    skipped: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors

    def lines(self) -> list[str]:
        if self.skipped:
            return [f"{self.path}: {self.check}: SKIP ({self.skipped})"]
        if self.ok:
            return [f"{self.path}: {self.check}: OK"]
        return [f"{self.path}: {self.check}: FAIL"] + [f"    {e}" for e in self.errors]


def _schema_errors(validator, doc) -> list[str]:
    """Every violation (not only the first), each as ``json/path: message``."""
    errors = sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{'/'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}" for e in errors]


# --- Ray cluster launcher ---------------------------------------------------------

def launcher_schema_errors(config: dict) -> list[str]:
    """The config as written against the schema shipped in the installed ray package."""
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    return _schema_errors(jsonschema.Draft7Validator(schema), config)


def launcher_ray_errors(config: dict) -> list[str]:
    """Ray's ``prepare_config`` + ``validate_config`` on a copy, as ``ray up`` runs them.

    They raise on the first problem, so at most one error comes back. Their console
    chatter (defaults filled in, warnings about file mounts) is swallowed.
    """
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    quiet = logging.getLogger("ray.autoscaler")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            validate_config(prepare_config(copy.deepcopy(config)))
    except jsonschema.ValidationError as e:
        where = "/".join(map(str, e.absolute_path)) or "<top>"
        return [f"{where}: {e.message}"]
    except (ValueError, KeyError, AssertionError, RuntimeError, TypeError) as e:
        return [f"{type(e).__name__}: {e}"]
    finally:
        quiet.setLevel(level)
    return []


def ec2_node_config_errors(config: dict) -> list[str]:
    """Each AWS ``node_config`` against botocore's RunInstances input model.

    Ray passes ``node_config`` to ``ec2.create_instances`` and adds MinCount/MaxCount
    itself, so they are supplied here. Raises ImportError without botocore.
    """
    import botocore.session
    from botocore.validate import ParamValidator

    shape = botocore.session.get_session().get_service_model("ec2").operation_model("RunInstances").input_shape
    errors = []
    for name, node_type in sorted(config.get("available_node_types", {}).items()):
        params = {"MinCount": 1, "MaxCount": 1, **node_type.get("node_config", {})}
        report = ParamValidator().validate(params, shape)
        if report.has_errors():
            errors += [f"available_node_types/{name}/node_config: {line}"
                       for line in report.generate_report().splitlines() if line.strip()]
    return errors


# --- KubeRay ----------------------------------------------------------------------

def kuberay_errors(manifest: dict) -> list[str]:
    """A ray.io/v1 manifest against ``deploy/kuberay/schema.json``."""
    import jsonschema

    schema = json.loads(KUBERAY_SCHEMA.read_text())
    return _schema_errors(jsonschema.Draft202012Validator(schema), manifest)


# --- Dockerfile -------------------------------------------------------------------

def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """``[(INSTRUCTION, arguments)]`` with comments dropped and ``\\`` continuations joined."""
    instructions, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction is not part of it
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    if pending:
        word, _, rest = pending.strip().partition(" ")
        instructions.append((word.upper(), rest.strip()))
    return instructions


def _pyproject(repo: Path) -> dict:
    return tomllib.loads((repo / "pyproject.toml").read_text())["project"]


def _ray_requirement(project: dict):
    from packaging.requirements import Requirement

    for dep in project["dependencies"]:
        req = Requirement(dep)
        if req.name == "ray":
            return req
    raise LookupError("pyproject.toml lists no ray dependency")


def _specifier(text: str):
    from packaging.specifiers import SpecifierSet

    return SpecifierSet(text)


_INSTRUCTIONS = frozenset({
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
})
_RAY_IMAGE = re.compile(r"^rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py(?P<py>3\d+)(-cpu)?$")
_LABEL = re.compile(r'([\w.\-]+)=("(?:[^"\\]|\\.)*"|\S+)')


def dockerfile_errors(text: str, repo: Path = REPO) -> list[str]:
    """Static rules for deploy/Dockerfile; see the module docstring."""
    project = _pyproject(repo)
    steps = parse_dockerfile(text)
    errors = [f"{instr} {args}: unknown instruction" for instr, args in steps if instr not in _INSTRUCTIONS]

    froms = [args for instr, args in steps if instr == "FROM"]
    if len(froms) != 1:
        errors.append(f"expected one FROM (a single-stage image), found {len(froms)}")
    for args in froms[:1]:
        image = (args.split() or [""])[0]
        m = _RAY_IMAGE.match(image)
        if not m:
            errors.append(f"FROM {image}: expected rayproject/ray:<x.y.z>-py3XX[-cpu], Ray's CPU base image")
        else:
            req = _ray_requirement(project)
            if not req.specifier.contains(m["ray"], prereleases=True):
                errors.append(f"FROM {image}: Ray {m['ray']} is outside pyproject's requirement {req}")
            python = f"3.{m['py'][1:]}"
            if not _specifier(project.get("requires-python", "")).contains(python):
                errors.append(f"FROM {image}: Python {python} is outside requires-python "
                              f"{project.get('requires-python')}")

    users = [(i, (args.split() or [""])[0]) for i, (instr, args) in enumerate(steps) if instr == "USER"]
    first_run = next((i for i, (instr, _) in enumerate(steps) if instr == "RUN"), len(steps))
    if not users:
        errors.append("no USER instruction: name the base image's non-root user (ray) explicitly")
    else:
        if users[0][0] > first_run:
            errors.append("a RUN comes before the first USER: nothing should run as an unnamed user")
        root = [u for _, u in users if u.split(":")[0] in ("root", "0", "")]
        if root:
            errors.append(f"USER {root[0] or '<empty>'}: stay the non-root user `ray` of Ray's images throughout")

    for instr, args in steps:
        if instr == "ADD" and re.search(r"(^|\s)(https?|ftp|git)://|(^|\s)git@", args):
            errors.append(f"ADD {args}: fetch nothing at build time; COPY files from the build context")

    labels = dict(_LABEL.findall(" ".join(args for instr, args in steps if instr == "LABEL")))
    version = labels.get("org.opencontainers.image.version", "").strip('"')
    if version != project["version"]:
        errors.append(f"LABEL org.opencontainers.image.version={version or '<missing>'}: "
                      f"expected pyproject's version {project['version']}")
    return errors


# --- dispatch ---------------------------------------------------------------------

def check_file(path: str | Path) -> list[Result]:
    """All checks that apply to one file; raises ValueError when the file is none of the kinds."""
    p = Path(path)
    name = str(path)
    text = p.read_text()
    if p.name == "Dockerfile" or p.suffix == ".Dockerfile":
        return [Result(name, "dockerfile", tuple(dockerfile_errors(text)))]
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict):
        raise ValueError(f"{name}: expected a YAML mapping, found {type(doc).__name__}")
    if "provider" in doc:
        results = [Result(name, "ray-schema", tuple(launcher_schema_errors(doc))),
                   Result(name, "ray-config", tuple(launcher_ray_errors(doc)))]
        if isinstance(doc["provider"], dict) and doc["provider"].get("type") == "aws":
            try:
                results.append(Result(name, "ec2-run-instances", tuple(ec2_node_config_errors(doc))))
            except ImportError:
                results.append(Result(name, "ec2-run-instances", skipped="botocore not installed"))
        return results
    if str(doc.get("apiVersion", "")).startswith("ray.io/"):
        return [Result(name, "kuberay-schema", tuple(kuberay_errors(doc)))]
    raise ValueError(f"{name}: neither a Ray cluster launcher config (no `provider`), "
                     f"a KubeRay manifest (apiVersion ray.io/...), nor a Dockerfile")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="deploy/check.py", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", metavar="FILE")
    args = parser.parse_args(argv)
    failed = False
    for f in args.files:
        try:
            results = check_file(f)
        except (OSError, ValueError, yaml.YAMLError) as e:
            print(f"deploy/check.py: error: {e}", file=sys.stderr)
            return 2
        for r in results:
            print("\n".join(r.lines()))
            failed |= not r.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
