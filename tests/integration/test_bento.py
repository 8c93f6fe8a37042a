"""The deployable unit: ``bentoml build -f serving/bentofile.yaml .`` into a temporary
BENTOML_HOME, what the bento carries, and the built bento serving over real HTTP with the
registry, index and MLflow store provided the way a container gets them (mounted / reached).

No Docker daemon here: the container itself is not built. The Dockerfile BentoML generates
at build time and infra/docker-compose.yaml are checked for the wiring they promise."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomllib
import yaml

from lookalike.local_redis import free_port
from tests.conftest import REPO_ROOT
from tests.server_process import stop, wait_until_ready

BENTOML = Path(sys.executable).with_name("bentoml")
LOCK = REPO_ROOT / "serving" / "requirements.lock.txt"
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
OUR_PACKAGES = ("serving", "lookalike", "training", "index_builder")


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


def bento_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}


@pytest.fixture(scope="module")
def bento(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("bentoml_home")
    done = subprocess.run(
        [str(BENTOML), "build", "-f", "serving/bentofile.yaml", ".", "-o", "tag"],
        cwd=REPO_ROOT, env=bento_env(home), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    tag = re.search(r"__tag__:(\S+)", done.stdout)
    assert tag, done.stdout
    name, version = tag.group(1).split(":")
    path = home / "bentos" / name / version
    assert (path / "bento.yaml").is_file()
    yield path
    shutil.rmtree(home, ignore_errors=True)


@pytest.mark.unit
def test_bento_lock_agrees_with_the_project_pins() -> None:
    lock = _pins(LOCK)
    constraints = _pins(REPO_ROOT / "constraints.txt")
    drifted = {name: (version, constraints[name]) for name, version in lock.items()
               if name in constraints and constraints[name] != version}
    assert not drifted, f"serving/requirements.lock.txt differs from constraints.txt, run `make bento-lock`: {drifted}"
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~ ;]", dep, maxsplit=1)[0]).lower() for dep in project}
    assert names <= set(lock), f"missing from the bento lock: {sorted(names - set(lock))}"
    assert lock["torch"].endswith("+cpu")
    assert f"--extra-index-url {TORCH_INDEX}" in LOCK.read_text().splitlines()


@pytest.mark.integration
def test_bento_carries_code_feature_repo_pins_and_model_reference(bento: Path) -> None:
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert info["service"] == "serving.service:LookalikeService"
    envs = {e["name"]: e["value"] for e in info["envs"]}
    assert envs["LOOKALIKE_MODEL_NAME"] == "lookalike-two-tower"
    assert envs["LOOKALIKE_MODEL_ALIAS"] == "champion"
    assert envs["LOOKALIKE_FEATURE_REPO"] == "/home/bentoml/bento/src/feature_repo"
    assert info["labels"]["owner"] == "lookalike"
    assert [r["route"] for r in info["schema"]["routes"]] == ["/assign", "/expand"]

    src = bento / "src"
    definitions = sorted(p.name for p in (REPO_ROOT / "feature_repo").glob("*.py"))
    assert sorted(p.name for p in (src / "feature_repo").glob("*.py")) == definitions
    assert (src / "feature_repo" / "feature_store.yaml").read_text() == (
        REPO_ROOT / "feature_repo" / "feature_store.yaml").read_text()
    assert (src / "infra" / "feature_store.redis.yaml").is_file()
    for guard_file in ("privacy_policy.yaml", "contract_fingerprints.json"):  # the privacy guard travels too
        assert (src / "feature_repo" / guard_file).read_text() == (REPO_ROOT / "feature_repo" / guard_file).read_text()
    assert not (src / "feature_repo" / "data").exists()  # the registry is mounted, not baked
    assert not (src / "tests").exists() and not (src / "bench").exists()
    assert not list(src.rglob("__pycache__"))
    for package in OUR_PACKAGES:
        shipped = sorted(p.name for p in (src / package).glob("*.py"))
        assert shipped == sorted(p.name for p in (REPO_ROOT / package).glob("*.py")), package

    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    assert f"--extra-index-url {TORCH_INDEX}" in requirements
    assert _pins(bento / "env" / "python" / "requirements.txt") == {**_pins(LOCK), "bentoml": "1.4.39"}
    assert not (bento / "env" / "python" / "requirements.lock.txt").exists()  # lock_packages: false

    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert "ENV UV_INDEX_STRATEGY=$UV_INDEX_STRATEGY" in dockerfile
    assert "pip install -r $BENTO_PATH/env/python/requirements.txt" in dockerfile
    assert "ENV LOOKALIKE_INDEX_ROOT=$LOOKALIKE_INDEX_ROOT" in dockerfile


@pytest.mark.integration
def test_bento_code_imports_from_the_bento_alone(bento: Path) -> None:
    """Every module of ours the service imports (also lazily, inside functions) resolves
    inside the bento, none from the checkout or an installed copy."""
    imported = set()
    for source in (bento / "src" / "serving").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in OUR_PACKAGES:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(a.name for a in node.names if a.name.split(".")[0] in OUR_PACKAGES)
    probe = (
        f"import importlib, sys, json; [importlib.import_module(m) for m in {sorted(imported)!r}]; "
        f"print(json.dumps({{n: m.__file__ for n, m in sys.modules.items() if n.split('.')[0] in {OUR_PACKAGES!r}}}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=bento / "src", env=bento_env(bento.parent),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    files = json.loads(done.stdout.strip().splitlines()[-1])
    assert "serving.core" in files and "training.artifact" in files
    outside = {n: f for n, f in files.items() if f and not Path(f).resolve().is_relative_to((bento / "src").resolve())}
    assert not outside, f"modules missing from the bento, loaded from elsewhere: {outside}"


@pytest.mark.integration
def test_compose_wires_the_service_to_redis_mlflow_and_the_bento_mounts(bento: Path) -> None:
    compose = yaml.safe_load((REPO_ROOT / "infra" / "docker-compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "mlflow", "lookalike"}
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    envs = {e["name"]: e["value"] for e in info["envs"]}
    service = services["lookalike"]
    targets = {volume.split(":")[1] for volume in service["volumes"]}
    assert f"{envs['LOOKALIKE_FEATURE_REPO']}/data" in targets
    assert envs["LOOKALIKE_INDEX_ROOT"] in targets
    # sources relative to infra/: what `feast apply` and `lookalike weekly` write in a checkout
    sources = {(REPO_ROOT / "infra" / volume.split(":")[0]).resolve() for volume in service["volumes"]}
    assert sources == {REPO_ROOT / "feature_repo" / "data", REPO_ROOT / "artifacts" / "index"}
    environment = service["environment"]
    assert environment["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert environment["LOOKALIKE_REDIS_URL"] == "redis:6379"
    assert environment["LOOKALIKE_ONLINE_STORE"] == "redis"
    from serving.config import ENV_FIELDS

    unknown = {k for k in environment if k.startswith("LOOKALIKE_")} - set(ENV_FIELDS) - {"LOOKALIKE_REDIS_URL"}
    assert not unknown, unknown
    import mlflow

    assert services["mlflow"]["image"].endswith(f":v{mlflow.__version__}")
    mlflow_command = " ".join(services["mlflow"]["command"])
    assert "--serve-artifacts" in mlflow_command and "mlflow:5000" in mlflow_command
    assert (REPO_ROOT / "infra" / "redis.conf").is_file()


@pytest.mark.e2e
def test_built_bento_serves_with_mounted_registry_and_index(
    bento: Path, trained_model: Any, index_bundle_dir: Path, materialized_repo_dir: Path,
    tmp_path: Path,
) -> None:
    # What the container's volume does: the applied registry (and SQLite online store)
    # appear under the bento's feature_repo/data. A copy of the bento keeps the store clean.
    deployed = tmp_path / "bento"
    shutil.copytree(bento, deployed)
    shutil.copytree(materialized_repo_dir / "data", deployed / "src" / "feature_repo" / "data")
    info = yaml.safe_load((deployed / "bento.yaml").read_text())
    env = {
        **bento_env(tmp_path / "home"),
        **{e["name"]: e["value"] for e in info["envs"]},
        "LOOKALIKE_FEATURE_REPO": str(deployed / "src" / "feature_repo"),
        "MLFLOW_TRACKING_URI": trained_model.tracking_uri,
        "LOOKALIKE_MODEL_NAME": trained_model.model_name,
        "LOOKALIKE_INDEX_DIR": str(index_bundle_dir),
    }
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(BENTOML), "serve", str(deployed), "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{url}/readyz", process, log_path)
        meta = httpx.get(f"{url}/metadata", timeout=10).json()
        assert meta["model_version"] == trained_model.model_version
        response = httpx.post(f"{url}/assign", json={"customer_ids": [1, 2, 3]}, timeout=60)
        assert response.status_code == 200, response.text
        assert len(response.json()["results"]) == 3
    finally:
        stop(process)
