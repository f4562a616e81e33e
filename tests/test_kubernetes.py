"""deploy/kubernetes and deploy/Dockerfile, tested as far as this machine allows.

- The manifests validate against the Kubernetes JSON schemas (kubernetes-validate, which
  ships them: no network is needed, and where network namespaces can be made that is
  checked by validating in one with no network at all).
- Their settings agree with each other and with rsgi: probes on the health path and the
  container's port, a termination grace period longer than rsgi's stop, WEB_CONCURRENCY
  from the CPU limit, selectors that match the pods.
- The container's arguments, run by rsgi here on loopback with the environment Kubernetes
  would give them, serve, turn /healthz 503 on TERM while still serving, and exit 0 within
  terminationGracePeriodSeconds.
- There is no container engine here: the Dockerfile is parsed, and its stages, users,
  paths and commands are checked against the repository.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import kubernetes_validate  # tests/requirements.txt
import pytest
import yaml
from conftest import REPO_ROOT, RawClient, free_port, spawn_process, wait_for

pytestmark = pytest.mark.rsgi_only

K8S = REPO_ROOT / "deploy" / "kubernetes"
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
K8S_VERSION = "1.37"  # the newest that kubernetes-validate 1.37.0 ships


def manifests() -> dict[str, dict]:
    """Every document of deploy/kubernetes/*.yaml, by kind."""
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] not in docs, f"two {doc['kind']}s"
            docs[doc["kind"]] = doc
    return docs


def container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def arg_value(args: list[str], name: str) -> str:
    assert args.count(name) == 1, (name, args)
    return args[args.index(name) + 1]


@functools.cache
def rsgi_help() -> str:
    result = subprocess.run(
        [sys.executable, "-m", "rsgi", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def parse_rsgi_args(args: list[str]) -> SimpleNamespace:
    """The options of an rsgi command line, checked against ``rsgi --help``: every flag must
    be one of rsgi's, with a value where rsgi's takes one. ``app`` is the positional APP."""
    help_text = rsgi_help()
    options = {}
    words = iter(args)
    for word in words:
        if not word.startswith("-"):
            assert "app" not in options, f"two APPs: {options['app']} and {word}"
            options["app"] = word
            continue
        takes_value = re.search(rf"(^\s+|, ){re.escape(word)} [A-Z_{{]", help_text, re.M)
        is_flag = re.search(rf"(^\s+|, ){re.escape(word)}(,|$|\s{{2}})", help_text, re.M)
        assert takes_value or is_flag, f"rsgi has no option {word}"
        name = word.lstrip("-").replace("-", "_")
        if takes_value:
            options[name] = next(words)
        else:
            options[name.removeprefix("no_")] = not name.startswith("no_")
    return SimpleNamespace(**options)


# --------------------------------------------------------------------------------------
# Kubernetes manifests
# --------------------------------------------------------------------------------------


def test_manifests_validate_against_the_kubernetes_schemas():
    docs = manifests()
    assert set(docs) == {"Deployment", "Service", "PodDisruptionBudget"}
    for doc in docs.values():
        # strict: unknown fields are errors too, so a misspelt key cannot pass.
        assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == K8S_VERSION
    # The validator does reject: a misspelt probe, a string where a number goes.
    bad = copy.deepcopy(docs["Deployment"])
    probe = container(bad).pop("readinessProbe")
    container(bad)["readinesProbe"] = probe
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    bad = copy.deepcopy(docs["Deployment"])
    bad["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "45s"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_kubernetes_validate_works_offline(tmp_path):
    """The schemas are in the package; where a namespace without network can be made (root,
    iproute2: CI), validation runs in it to show that nothing is fetched."""
    import kubernetes_validate.utils as utils

    schemas = Path(utils.__file__).parent / "kubernetes-json-schema" / f"v{K8S_VERSION}.0-local"
    for name in ("deployment-apps-v1", "service-v1", "poddisruptionbudget-policy-v1"):
        assert (schemas / f"{name}.json").is_file(), name
    import cluster

    if cluster.namespaces_unavailable():
        return
    ns = f"{cluster.PREFIX}{os.getpid()}-offline"
    script = textwrap.dedent(
        f"""
        import glob, socket, yaml, kubernetes_validate
        # No network here: not even a route to anywhere.
        try:
            socket.create_connection(("10.255.255.1", 443), timeout=1)
            raise SystemExit("this namespace has network")
        except OSError:
            pass
        for path in sorted(glob.glob({str(K8S / "*.yaml")!r})):
            for doc in yaml.safe_load_all(open(path)):
                print(doc["kind"], kubernetes_validate.validate(doc, {K8S_VERSION!r}, strict=True))
        """
    )
    cluster.ip("netns", "add", ns)
    try:
        result = subprocess.run(
            [cluster.find_tool("ip"), "netns", "exec", ns, sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        cluster.ip("netns", "del", ns, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(result.stdout.split("\n")[:-1]) == [
        f"Deployment {K8S_VERSION}",
        f"PodDisruptionBudget {K8S_VERSION}",
        f"Service {K8S_VERSION}",
    ]


def test_deployment_settings_agree_with_rsgi():
    docs = manifests()
    deployment, service, pdb = docs["Deployment"], docs["Service"], docs["PodDisruptionBudget"]
    pod = deployment["spec"]["template"]
    app = container(deployment)
    args = app["args"]
    options = parse_rsgi_args(args)
    health = options.health_path
    delay = float(options.shutdown_delay)
    graceful = float(options.timeout_graceful_shutdown)
    assert health == "/healthz" and delay > 0

    # The kubelet's SIGKILL comes terminationGracePeriodSeconds after SIGTERM: after rsgi's
    # delay and graceful stop, with room for the lifespan shutdown.
    assert pod["spec"]["terminationGracePeriodSeconds"] >= delay + graceful + 5

    # Probes: the health path on the container's port; readiness notices the 503 well
    # within the delay; liveness never restarts a pod merely for being slow to start.
    (port,) = app["ports"]
    assert port["containerPort"] == int(options.port)
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = app[kind]["httpGet"]
        assert probe["path"] == health and probe["port"] in (port["name"], port["containerPort"])
    ready = app["readinessProbe"]
    assert ready["periodSeconds"] * ready["failureThreshold"] < delay
    live = app["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] >= 30

    # WEB_CONCURRENCY (rsgi's --workers) is the container's CPU limit, in whole CPUs.
    env = {e["name"]: e for e in app["env"]}
    field = env["WEB_CONCURRENCY"]["valueFrom"]["resourceFieldRef"]
    assert field == {"containerName": app["name"], "resource": "limits.cpu", "divisor": "1"}
    assert "--workers" not in args and "-w" not in args
    resources = app["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}

    # A rollout never goes below the replica count; the Service and the budget select
    # exactly the Deployment's pods.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    assert service["spec"]["selector"] == labels
    assert pdb["spec"]["selector"]["matchLabels"] == labels
    assert pdb["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]

    # The pod runs as the image's user.
    user = pod["spec"]["securityContext"]["runAsUser"]
    assert dockerfile_user() == f"{user}:{pod['spec']['securityContext']['runAsGroup']}"


def children(pid: int) -> list[str]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found += (task / "children").read_text().split()
    return found


def cpu_quantity(text: str) -> int:
    """Whole CPUs of a Kubernetes CPU quantity, rounded up as resourceFieldRef does."""
    return math.ceil(int(text[:-1]) / 1000 if text.endswith("m") else float(text))


@pytest.mark.timeout(90)
def test_deployment_command_serves_and_stops_within_the_grace_period():
    """The container's args, run as Kubernetes would (its env, WEB_CONCURRENCY from the CPU
    limit), on loopback: serve, readiness 503 on TERM while still serving, exit 0 in time."""
    deployment = manifests()["Deployment"]
    app = container(deployment)
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    port = free_port()
    args = list(app["args"])
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    delay = float(arg_value(args, "--shutdown-delay"))
    env = {e["name"]: e.get("value", "") for e in app["env"]}
    workers = cpu_quantity(app["resources"]["limits"]["cpu"])
    env["WEB_CONCURRENCY"] = str(workers)
    server = spawn_process(
        [sys.executable, "-m", "rsgi", *args, "--app-dir", str(REPO_ROOT)], port=port, env=env
    )
    try:

        def get(path: str) -> int | None:
            try:
                with RawClient(port, timeout=3) as client:
                    client.request("GET", path, headers=[("Connection", "close")])
                    return client.read_response().status
            except OSError:
                return None

        wait_for(lambda: get("/healthz") == 200, timeout=30, message=server.output())
        assert get("/") == 200  # the app itself (examples/main.py)
        wait_for(lambda: len(children(server.pid)) == workers, timeout=10, message="workers")
        term = time.monotonic()
        server.signal(signal.SIGTERM)
        wait_for(lambda: get("/healthz") == 503, timeout=2, message="readiness never failed")
        assert get("/") == 200  # still serving what the endpoints still send
        code = server.wait_exit(grace)
        took = time.monotonic() - term
        assert code == 0, server.output()
        assert delay - 0.2 <= took < grace, took
    finally:
        server.stop()


# --------------------------------------------------------------------------------------
# Dockerfile (no engine here: parsed and checked against the repository)
# --------------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, continuation lines joined."""
    out = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        assert word.isalpha(), f"not an instruction: {line!r}"
        out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def stages() -> list[dict]:
    """Each stage: name, base image and its instructions; ARGs before the first FROM."""
    result = [{"name": None, "from": None, "body": []}]
    for instruction, args in dockerfile_instructions(DOCKERFILE.read_text()):
        if instruction == "FROM":
            match = re.fullmatch(r"(\S+)(?: AS (\w+))?", args, re.I)
            assert match, args
            result.append({"name": match.group(2), "from": match.group(1), "body": []})
        else:
            result[-1]["body"].append((instruction, args))
    return result


def toml_value(name: str, key: str) -> str:
    """A top-level string value of a TOML file of the repository (tomllib is 3.11+)."""
    match = re.search(rf'^{re.escape(key)} = "([^"]*)"$', (REPO_ROOT / name).read_text(), re.M)
    assert match, (name, key)
    return match.group(1)


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def dockerfile_user() -> str:
    runtime = stages()[-1]
    users = [args for instruction, args in runtime["body"] if instruction == "USER"]
    return users[-1]


def test_dockerfile_stages_and_users():
    text = DOCKERFILE.read_text()
    assert text.startswith("# syntax=docker/dockerfile:1\n")
    preamble, *built = stages()
    assert [s["name"] for s in built] == ["build", "runtime"]
    # ARGs used in FROM lines are declared before the first FROM, with defaults.
    args = dict(re.fullmatch(r"(\w+)=(\S+)", a).groups() for i, a in preamble["body"])
    assert {i for i, _ in preamble["body"]} == {"ARG"}
    for stage in built:
        base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], stage["from"])
        assert re.fullmatch(r"python:3\.\d+-slim-\w+", base), base
    python = tuple(int(x) for x in args["PYTHON_VERSION"].split("."))
    requires = toml_value("pyproject.toml", "requires-python")
    assert python >= tuple(int(x) for x in requires.removeprefix(">=").split("."))

    build, runtime = built
    build_runs = " ".join(a for i, a in build["body"] if i == "RUN")
    assert "maturin build --release" in build_runs and "--out /wheels" in build_runs
    rust = re.search(r"^ARG RUST_VERSION=([\d.]+)$", text, re.M).group(1)
    wanted = toml_value("Cargo.toml", "rust-version")
    assert tuple(map(int, rust.split("."))) >= tuple(map(int, wanted.split("."))), rust
    # The same maturin as pyproject.toml's build-system.
    maturin = re.search(r'"(maturin[^"]+)"', build_runs).group(1)
    assert f'requires = ["{maturin}"]' in (REPO_ROOT / "pyproject.toml").read_text()

    # The runtime stage: no compiler, the build stage's wheels, a non-root user last.
    runtime_text = " ".join(a for _, a in runtime["body"])
    assert "apt-get" not in runtime_text and "maturin" not in runtime_text
    assert "from=build" in runtime_text and "--no-index" in runtime_text
    instructions = [i for i, _ in runtime["body"]]
    assert instructions.count("USER") == 1
    assert instructions.index("USER") < instructions.index("ENTRYPOINT")
    user, group = dockerfile_user().split(":")
    assert int(user) >= 1000 and int(group) >= 1000
    assert f"--uid {user}" in runtime_text and f"--gid {group}" in runtime_text


def test_dockerfile_copies_existing_paths_and_runs_a_valid_command():
    ignore = (REPO_ROOT / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore  # everything else stays out of the build context
    copied = set()
    for stage in stages()[1:]:
        for instruction, args in stage["body"]:
            assert instruction != "ADD", "use COPY"
            if instruction != "COPY":
                continue
            words = shlex.split(args)
            assert not any(w.startswith("--from") for w in words)
            *sources, _dest = [w for w in words if not w.startswith("--")]
            for source in sources:
                path = REPO_ROOT / source
                assert path.exists(), f"COPY {source}: no such path in the repository"
                assert source.rstrip("/") in kept, f"{source} is excluded by the .dockerignore"
                copied.add(source.rstrip("/"))
    # What maturin needs to build the wheel.
    assert {"Cargo.toml", "Cargo.lock", "pyproject.toml", "README.md", "src", "python"} <= copied

    runtime = dict(stages()[-1]["body"])
    entrypoint = exec_form(runtime["ENTRYPOINT"])
    cmd = exec_form(runtime["CMD"])
    # The console script the wheel installs.
    scripts = (REPO_ROOT / "pyproject.toml").read_text().split("[project.scripts]")[1]
    assert entrypoint == ["rsgi"] and re.match(r"\s*rsgi = ", scripts)
    options = parse_rsgi_args(cmd)
    module, _, attribute = options.app.partition(":")
    source = REPO_ROOT / (module.replace(".", "/") + ".py")
    assert source.is_file() and re.search(rf"^{attribute} = ", source.read_text(), re.M)
    assert module.split(".")[0] in copied
    assert options.host == "0.0.0.0" and runtime["EXPOSE"] == options.port
    assert runtime["STOPSIGNAL"] == "SIGTERM"
    health = exec_form(runtime["HEALTHCHECK"].split(" CMD ", 1)[1])
    assert f"http://127.0.0.1:{options.port}{options.health_path}" in health[-1]
    # The same port and health path as the Kubernetes manifests.
    app = container(manifests()["Deployment"])
    assert app["ports"][0]["containerPort"] == int(options.port)
    assert app["readinessProbe"]["httpGet"]["path"] == options.health_path
