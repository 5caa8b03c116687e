"""deploy/: every config passes the validators of its real tool, a misspelling fails them,
and the configs agree with each other and with pyproject.toml.

The validators live in deploy/check.py (``python deploy/check.py FILE...``); nothing
here needs a network, a cloud account, Docker or Kubernetes.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import shlex
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
LAUNCHERS = ["aws.yaml", "gcp.yaml"]
MANIFESTS = ["kuberay/raycluster.yaml", "kuberay/rayjob.yaml"]
# Ray CPUs one distntk actor reserves (the service's default num_cpus).
ACTOR_NUM_CPUS = 1
STORE_SCHEME = {"aws": "s3", "gcp": "gs"}


def _load_check():
    spec = importlib.util.spec_from_file_location("deploy_check", DEPLOY / "check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


check = _load_check()
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
VERSION = PROJECT["version"]


def _yaml(name):
    return yaml.safe_load((DEPLOY / name).read_text())


def _ray_version_of_image(image):
    m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py311(-cpu)?", image)
    assert m, f"{image}: expected rayproject/ray:<x.y.z>-py311[-cpu]"
    return m[1]


def _dockerfile():
    return check.parse_dockerfile((DEPLOY / "Dockerfile").read_text())


def _cluster_ray_version():
    """The one Ray version the deployment runs: the Dockerfile's base image."""
    (image,) = [args.split()[0] for instr, args in _dockerfile() if instr == "FROM"]
    return _ray_version_of_image(image)


def _option(command, flag):
    """The value of ``--flag VALUE`` in a shell command line."""
    words = shlex.split(command)
    assert words.count(flag) == 1, f"{flag} once in {command!r}"
    return words[words.index(flag) + 1]


# --- validators accept the shipped files --------------------------------------------

@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_passes_ray_schema_and_ray_checks(name):
    config = _yaml(name)
    assert check.launcher_schema_errors(config) == []
    assert check.launcher_ray_errors(config) == []


def test_aws_node_configs_pass_the_ec2_run_instances_model():
    pytest.importorskip("botocore")
    assert check.ec2_node_config_errors(_yaml("aws.yaml")) == []


@pytest.mark.parametrize("name", MANIFESTS)
def test_kuberay_manifest_passes_schema(name):
    assert check.kuberay_errors(_yaml(name)) == []


def test_dockerfile_passes_static_rules():
    assert check.dockerfile_errors((DEPLOY / "Dockerfile").read_text()) == []


def test_cli_prints_ok_for_every_shipped_file(capsys):
    files = [str(DEPLOY / n) for n in LAUNCHERS + MANIFESTS + ["Dockerfile"]]
    assert check.main(files) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.endswith(": OK") for line in lines), lines
    assert {line.split(": ")[1] for line in lines} >= {"ray-schema", "ray-config", "kuberay-schema", "dockerfile"}


# --- a misspelled field fails each validator ----------------------------------------

def _rename_key(doc, path, new):
    """Copy of ``doc`` with the key at ``path`` (a tuple of keys/indices) renamed to ``new``."""
    doc = copy.deepcopy(doc)
    *parents, old = path
    node = doc
    for p in parents:
        node = node[p]
    node[new] = node.pop(old)
    return doc


LAUNCHER_MISSPELLINGS = [
    (("setup_commands",), "setup_comands"),
    (("available_node_types", "cpu_worker", "min_workers"), "min_worker"),
    (("docker", "run_options"), "run_option"),
]


@pytest.mark.parametrize("name", LAUNCHERS)
@pytest.mark.parametrize("path,typo", LAUNCHER_MISSPELLINGS, ids=[t for _, t in LAUNCHER_MISSPELLINGS])
def test_launcher_misspelling_fails_ray_schema_and_ray_checks(name, path, typo):
    bad = _rename_key(_yaml(name), path, typo)
    for errors in (check.launcher_schema_errors(bad), check.launcher_ray_errors(bad)):
        assert errors and any(f"'{typo}' was unexpected" in e for e in errors), errors


def test_aws_node_config_misspelling_fails_the_ec2_model():
    pytest.importorskip("botocore")
    bad = _rename_key(_yaml("aws.yaml"), ("available_node_types", "cpu_worker", "node_config", "InstanceType"),
                      "InstanceTyp")
    errors = check.ec2_node_config_errors(bad)
    assert errors and 'Unknown parameter in input: "InstanceTyp"' in errors[0]
    # Ray's own schema leaves node_config to the cloud: only the EC2 model catches this one.
    assert check.launcher_schema_errors(bad) == []


MANIFEST_MISSPELLINGS = [
    ("kuberay/rayjob.yaml", ("spec", "shutdownAfterJobFinishes"), "shutdownAfterJobFinish"),
    ("kuberay/rayjob.yaml", ("spec", "ttlSecondsAfterFinished"), "ttlSecondAfterFinished"),
    ("kuberay/rayjob.yaml", ("spec", "rayClusterSpec", "authOptions", "mode"), "mod"),
    ("kuberay/raycluster.yaml", ("spec", "authOptions"), "authOption"),
    ("kuberay/raycluster.yaml", ("spec", "workerGroupSpecs", 0, "minReplicas"), "minReplica"),
    ("kuberay/raycluster.yaml",
     ("spec", "workerGroupSpecs", 0, "template", "spec", "containers", 0, "resources", "requests"), "request"),
    ("kuberay/raycluster.yaml", ("metadata", "name"), "nmae"),
]


@pytest.mark.parametrize("name,path,typo", MANIFEST_MISSPELLINGS, ids=[t for _, _, t in MANIFEST_MISSPELLINGS])
def test_kuberay_misspelling_fails_schema(name, path, typo):
    errors = check.kuberay_errors(_rename_key(_yaml(name), path, typo))
    assert errors and any(f"'{typo}' was unexpected" in e for e in errors), errors


@pytest.mark.parametrize("field,value", [("apiVersion", "ray.io/v1alpha1"), ("kind", "RayClusters")])
def test_kuberay_wrong_api_version_or_kind_fails_schema(field, value):
    doc = _yaml("kuberay/raycluster.yaml")
    doc[field] = value
    assert check.kuberay_errors(doc)


DOCKERFILE_BREAKAGES = {
    "misspelled instruction": ("USER ray", "USR ray"),
    "misspelled label key": ("org.opencontainers.image.version", "org.opencontainers.image.versoin"),
    "root user": ("USER ray", "USER root"),
    "ADD of a URL": ("COPY --chown=ray:users jobs/ ./jobs/", "ADD https://example.com/jobs.tar ./jobs/"),
    "Ray below pyproject's floor": ("rayproject/ray:2.60.0-py311-cpu", "rayproject/ray:2.30.0-py311-cpu"),
    "Python below requires-python": ("rayproject/ray:2.60.0-py311-cpu", "rayproject/ray:2.60.0-py310-cpu"),
    "not Ray's base image": ("rayproject/ray:2.60.0-py311-cpu", "python:3.11-slim"),
    "version label off": ('org.opencontainers.image.version="0.4.0"', 'org.opencontainers.image.version="0.0.9"'),
}


@pytest.mark.parametrize("old,new", DOCKERFILE_BREAKAGES.values(), ids=DOCKERFILE_BREAKAGES.keys())
def test_dockerfile_breakage_fails_static_rules(old, new):
    text = (DEPLOY / "Dockerfile").read_text()
    assert old in text
    assert check.dockerfile_errors(text.replace(old, new, 1))


def test_cli_reports_a_misspelling_and_exits_1(tmp_path, capsys):
    bad = tmp_path / "aws.yaml"
    bad.write_text((DEPLOY / "aws.yaml").read_text().replace("\nsetup_commands:", "\nsetup_comands:"))
    assert check.main([str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}: ray-schema: FAIL" in out and "'setup_comands' was unexpected" in out


def test_cli_rejects_a_file_of_no_known_kind(tmp_path, capsys):
    other = tmp_path / "other.yaml"
    other.write_text("apiVersion: v1\nkind: Pod\n")
    assert check.main([str(other)]) == 2
    assert "neither a Ray cluster launcher config" in capsys.readouterr().err


# --- the Dockerfile parser ----------------------------------------------------------

def test_parse_dockerfile_joins_continuations_and_drops_comments():
    text = "# c\nFROM a:1\n\nRUN x \\\n  # inner comment\n  && y\nlabel k=v\n"
    assert check.parse_dockerfile(text) == [("FROM", "a:1"), ("RUN", "x && y"), ("LABEL", "k=v")]


def test_dockerfile_copies_only_what_the_repository_has():
    sources = [w for instr, args in _dockerfile() if instr == "COPY"
               for w in args.split()[:-1] if not w.startswith("--")]
    assert {"pyproject.toml", "README.md", "distntk/", "jobs/"} <= set(sources)
    for src in sources:
        if src == "jobs/" and not (REPO / "jobs").is_dir():
            continue  # the job specs arrive with the service branch; checked once merged
        assert (REPO / src).exists(), src


# --- the configs agree with each other and with pyproject ----------------------------

def test_one_ray_version_everywhere_inside_pyproject_requirement():
    from packaging.requirements import Requirement

    ray = _cluster_ray_version()
    (req,) = [Requirement(d) for d in PROJECT["dependencies"] if Requirement(d).name == "ray"]
    assert req.specifier.contains(ray), (ray, str(req))
    for name in LAUNCHERS:
        assert _ray_version_of_image(_yaml(name)["docker"]["image"]) == ray, name
    for name in MANIFESTS:
        doc = _yaml(name)
        spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
        assert spec["rayVersion"] == ray, name
    assert f"ray.__version__ == '{ray}'" in (DEPLOY / "Dockerfile").read_text()


def test_distntk_version_pinned_everywhere():
    import distntk

    assert distntk.__version__ == VERSION
    wheel = f"distntk-{VERSION}-py3-none-any.whl"
    for name in LAUNCHERS:
        setup = _yaml(name)["setup_commands"]
        assert any(wheel in cmd and cmd.startswith("pip install") for cmd in setup), (name, setup)
        assert any(f"distntk.__version__ == '{VERSION}'" in cmd for cmd in setup), (name, setup)
    assert f"distntk.__version__ == '{VERSION}'" in (DEPLOY / "Dockerfile").read_text()
    for name in MANIFESTS:
        for container in _containers(_yaml(name)):
            assert container["image"].endswith(f"/distntk:{VERSION}"), (name, container["image"])


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_token_auth_on_every_node(name):
    config = _yaml(name)
    mounts = config["file_mounts"]
    # The local token (written by `ray get-auth-token --generate`) lands on Ray's
    # default token path inside the container, on the head and on every worker.
    assert mounts.get("/home/ray/.ray/auth_token") == "~/.ray/auth_token"
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    for cmd in (c for c in starts if "ray start" in c):
        assert "RAY_AUTH_MODE=token ray start" in cmd, cmd


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_autoscales_cpu_workers_sized_for_actors(name):
    config = _yaml(name)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}, "work units must not land on the head"
    workers = [t for n, t in types.items() if n != config["head_node_type"]]
    assert len(workers) == 1
    (worker,) = workers
    assert 0 <= worker["min_workers"] <= worker["max_workers"] <= config["max_workers"]
    assert worker["max_workers"] > worker["min_workers"], "no room to autoscale"
    cpus = worker["resources"]["CPU"]
    assert cpus > 0 and cpus % ACTOR_NUM_CPUS == 0
    actors = int(_option(config["metadata"]["distntk_job"], "--actors"))
    assert 0 < actors <= worker["max_workers"] * cpus // ACTOR_NUM_CPUS


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_store_is_object_storage_of_its_cloud(name):
    config = _yaml(name)
    scheme = STORE_SCHEME[config["provider"]["type"]]
    store = config["metadata"]["distntk_store"]
    assert store.startswith(f"{scheme}://") and store.endswith(".zarr")
    job = config["metadata"]["distntk_job"]
    assert job.startswith("distntk run jobs/") and _option(job, "--store") == store
    assert f"--store {store}" in (DEPLOY / name).read_text().split("cluster_name:")[0], "header example"


def test_gcp_worker_service_account_is_in_the_project():
    config = _yaml("gcp.yaml")
    (account,) = config["available_node_types"]["cpu_worker"]["node_config"]["serviceAccounts"]
    assert account["email"].endswith(f"@{config['provider']['project_id']}.iam.gserviceaccount.com")


def _cluster_spec(doc):
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def _containers(doc):
    spec = _cluster_spec(doc)
    groups = [spec["headGroupSpec"]] + spec.get("workerGroupSpecs", [])
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def test_rayjob_runs_on_the_raycluster_spec():
    assert _cluster_spec(_yaml("kuberay/rayjob.yaml")) == _cluster_spec(_yaml("kuberay/raycluster.yaml"))


@pytest.mark.parametrize("name", MANIFESTS)
def test_kuberay_token_auth_and_autoscaling(name):
    spec = _cluster_spec(_yaml(name))
    assert spec["authOptions"]["mode"] == "token"
    assert spec["enableInTreeAutoscaling"] is True
    for group in spec["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["maxReplicas"] > group["minReplicas"]


@pytest.mark.parametrize("name", MANIFESTS)
def test_kuberay_pod_resources_match_actor_cpus(name):
    spec = _cluster_spec(_yaml(name))
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", "work units must not land on the head"
    for group in spec["workerGroupSpecs"]:
        ray_cpus = int(group["rayStartParams"]["num-cpus"])
        assert ray_cpus > 0 and ray_cpus % ACTOR_NUM_CPUS == 0
        for container in group["template"]["spec"]["containers"]:
            resources = container["resources"]
            # Kubernetes reserves exactly the cores Ray hands out to actors.
            assert str(resources["requests"]["cpu"]) == str(resources["limits"]["cpu"]) == str(ray_cpus)
            assert resources["requests"]["memory"] == resources["limits"]["memory"]


def test_rayjob_entrypoint_lifecycle_and_capacity():
    job = _yaml("kuberay/rayjob.yaml")
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    entry = spec["entrypoint"]
    words = shlex.split(entry)
    assert words[:2] == ["distntk", "run"]
    assert not set(entry) & set(";&|<>`$()"), "KubeRay pastes the entrypoint into a shell line"
    assert _option(entry, "--store").startswith("s3://")
    # The spec path is where deploy/Dockerfile copies jobs/.
    workdir = [args for instr, args in _dockerfile() if instr == "WORKDIR"][-1]
    assert re.fullmatch(re.escape(workdir) + r"/jobs/[\w.-]+\.toml", words[2]), (words[2], workdir)
    spec_file = REPO / "jobs" / Path(words[2]).name
    if (REPO / "jobs").is_dir():
        assert spec_file.is_file(), spec_file
    (workers,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    capacity = workers["maxReplicas"] * int(workers["rayStartParams"]["num-cpus"]) // ACTOR_NUM_CPUS
    assert 0 < int(_option(entry, "--actors")) <= capacity


def test_docs_scale_out_names_only_files_that_exist():
    """The scale-out walk-through (docs/guides/cloud.md and kuberay.md, moved there from the README)."""
    section = "".join((REPO / "docs" / "guides" / name).read_text() for name in ("cloud.md", "kuberay.md"))
    for needle in ("ray up deploy/aws.yaml", "kubectl apply -f deploy/kuberay/", "ray get-auth-token",
                   "ray dashboard", "kubectl port-forward", "ray job submit", "distntk query s3://"):
        assert needle in section, needle
    for path in set(re.findall(r"deploy/[\w./-]+\w", section)):
        assert (REPO / path).exists(), path
