"""The Dockerfile and compose.yaml, checked without a Docker engine: parsed statically, their
shell logic run with stand-ins for pip, the package built from exactly what the image copies,
and the commands they run (install, worker, health checks) run here against a real Postgres."""

from __future__ import annotations

import argparse
import http.server
import importlib
import json
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.fake_openai import FakeOpenAI
from tests.worker_helpers import (
    REPO_ROOT,
    create_source,
    create_vectorizer,
    daemon,
    doc_rows,
    store_rows,
    wait_for,
    worker_env,
)
from vectorizer.cli import add_worker_arguments, build_parser

DOCKERFILE = REPO_ROOT / "Dockerfile"
COMPOSE = REPO_ROOT / "compose.yaml"
BIN = Path(sys.executable).parent
CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"
PIP_WHEEL = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        result.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert pending == "", "the Dockerfile ends inside a continued line"
    return result


def only(kind: str) -> str:
    found = [arguments for keyword, arguments in instructions() if keyword == kind]
    assert len(found) == 1, f"expected one {kind}, found {found}"
    return found[0]


def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


def console_scripts() -> dict[str, str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    return dict(project["project"]["scripts"])


def subcommands() -> set[str]:
    parser = build_parser()
    [group] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(group.choices)


def worker_parser() -> argparse.ArgumentParser:
    """What `vectorizer-worker` parses (vectorizer.cli.worker_main), failing loudly."""
    parser = argparse.ArgumentParser(prog="vectorizer-worker", exit_on_error=False)
    add_worker_arguments(parser)
    return parser


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_small_image_non_root_worker_entrypoint_and_health_check() -> None:
    steps = instructions()
    keywords = [keyword for keyword, _ in steps]
    image = only("FROM").split()[0]
    assert image.startswith("python:3.") and image.endswith("-slim")

    users = [arguments for keyword, arguments in steps if keyword == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    user = users[-1].split(":")[0]
    created = [
        index
        for index, (keyword, arguments) in enumerate(steps)
        if keyword == "RUN" and "useradd" in arguments and arguments.rstrip().endswith(user)
    ]
    assert created and created[0] < keywords.index("USER")  # made before switching to it
    # nothing runs as root after the switch
    assert "RUN" not in keywords[len(keywords) - keywords[::-1].index("USER") :]

    assert json.loads(only("ENTRYPOINT")) == ["vectorizer-worker"]
    default_flags = json.loads(only("CMD"))
    assert worker_parser().parse_args(default_flags).concurrency == 4

    env = dict(
        (name, value)
        for keyword, arguments in steps
        if keyword == "ENV"
        for name, _, value in [arguments.partition("=")]
    )
    # the worker binds loopback unless told otherwise; the image must be reachable from outside
    assert env.get("VECTORIZER_METRICS_HOST") == "0.0.0.0"
    port = env.get("VECTORIZER_METRICS_PORT")
    assert port is not None and port.isdigit()
    assert only("EXPOSE") == port
    health = only("HEALTHCHECK")
    assert "--interval=" in health and "--timeout=" in health
    assert "/healthz" in health and "VECTORIZER_METRICS_PORT" in health


def test_dockerfile_installs_cpu_torch_only_for_extras_that_need_it() -> None:
    assert only("ARG").startswith("EXTRAS=")
    for keyword, arguments in instructions():
        assert "torchvision" not in arguments, (keyword, arguments)
    [install] = [a for k, a in instructions() if k == "RUN" and "pip install" in a]

    def pip_commands(extras: str) -> list[str]:
        stubs = 'pip() { echo "pip $*"; }; useradd() { :; }; '
        result = subprocess.run(
            ["sh", "-c", stubs + install],
            env={"PATH": "/usr/bin:/bin", "EXTRAS": extras},
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    assert pip_commands("") == ["pip install ."]
    assert pip_commands("otel,datadog") == ["pip install .[otel,datadog]"]
    for extras in ("local", "docs", "local,docs", "otel,docs", "demo", "all"):
        commands = pip_commands(extras)
        assert len(commands) == 2, (extras, commands)
        assert commands[0].startswith(f"pip install {CPU_INDEX} "), (extras, commands)
        assert "torch" in commands[0]
        assert commands[1] == f"pip install .[{extras}]"  # after torch, so pip keeps it


def test_the_image_contents_build_a_package_with_the_sql(tmp_path: Path) -> None:
    context = tmp_path / "app"
    context.mkdir()
    copies = [arguments.split() for keyword, arguments in instructions() if keyword == "COPY"]
    assert copies
    for *sources, target in copies:
        for source in sources:
            origin = REPO_ROOT / source
            assert origin.exists(), f"COPY {source}: not in the repository"
            destination = context / (source if target in (".", "./") else target)
            if origin.is_dir():
                shutil.copytree(origin, destination, symlinks=True)
            else:
                shutil.copy2(origin, destination)

    result = subprocess.run(
        [*PIP_WHEEL, "-w", str(tmp_path / "dist"), str(context)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    [wheel] = (tmp_path / "dist").glob("vectorizer-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for sql_file in sorted((REPO_ROOT / "vectorizer" / "sql").rglob("*.sql")):
        relative = sql_file.relative_to(REPO_ROOT).as_posix()
        assert relative in names, f"{relative} would be missing in the image"
    assert "vectorizer/cli.py" in names and "vectorizer/observability/metrics.py" in names
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "vectorizer-worker = vectorizer.cli:worker_main" in scripts


class _Answer503(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)
        self.end_headers()
        self.wfile.write(b"stuck")

    def log_message(self, *args: object) -> None:
        pass


def test_health_checks_pass_on_a_live_worker_and_fail_on_503_or_nothing(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    image_check = shlex.split(only("HEALTHCHECK").split(" CMD ", 1)[1])
    compose_check = compose()["services"]["worker"]["healthcheck"]["test"]
    assert image_check[0] == "python" and compose_check[:2] == ["CMD", "python"]
    image_check[0] = compose_check[1] = sys.executable  # the image's python is ours here

    def checks_pass(port: int) -> list[bool]:
        image = subprocess.run(
            image_check,
            env={**worker_env(), "VECTORIZER_METRICS_PORT": str(port)},
            capture_output=True,
            timeout=15,
            check=False,
        )
        command = [part.replace("9464", str(port)) for part in compose_check[1:]]
        composed = subprocess.run(command, capture_output=True, timeout=15, check=False)
        return [image.returncode == 0, composed.returncode == 0]

    create_source(conn, rows=doc_rows(2))
    create_vectorizer(conn)
    port = free_port()
    flags = ["--metrics-port", str(port), "--metrics-host", "127.0.0.1"]
    with daemon(db_url, *flags, env=worker_env(fake)) as handle:
        wait_for(lambda: len(store_rows(conn)) == 2, 20, what="the rows embedded")
        assert checks_pass(port) == [True, True]
        assert handle.alive()

    assert checks_pass(free_port()) == [False, False]  # nothing listening
    server = http.server.HTTPServer(("127.0.0.1", 0), _Answer503)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert checks_pass(server.server_address[1]) == [False, False]
    finally:
        server.shutdown()
        server.server_close()


# --- compose.yaml ------------------------------------------------------------------------------


def test_compose_services_and_their_wiring() -> None:
    services = compose()["services"]
    assert {"db", "install", "worker", "ollama"} <= set(services)

    db = services["db"]
    assert db["image"].startswith("pgvector/pgvector:")
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])

    install = services["install"]
    assert install["entrypoint"] == ["vectorizer", "install"]
    assert install["depends_on"]["db"]["condition"] == "service_healthy"
    assert install["restart"] == "no"
    assert "@db:5432/" in install["environment"]["VECTORIZER_DB_URL"]

    worker = services["worker"]
    # one image, built once from the Dockerfile by install, run by both
    assert install["build"] == "." and "build" not in worker
    assert worker["image"] == install["image"] and worker["pull_policy"] == "never"
    for service in (install, worker):
        assert service["env_file"] == [{"path": ".env", "required": False}]
    assert worker["depends_on"]["install"]["condition"] == "service_completed_successfully"
    assert worker["depends_on"]["db"]["condition"] == "service_healthy"
    environment = worker["environment"]
    assert environment["VECTORIZER_DB_URL"] == install["environment"]["VECTORIZER_DB_URL"]
    port = str(environment["VECTORIZER_METRICS_PORT"])
    health = " ".join(worker["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/healthz" in health
    assert f"127.0.0.1:{port}:{port}" in worker["ports"]
    assert environment["VECTORIZER_METRICS_HOST"] == "0.0.0.0"  # reachable through the mapping
    # a local Postgres keeps 5432; the compose database is published elsewhere, on loopback
    [db_port] = db["ports"]
    assert db_port.startswith("127.0.0.1:") and not db_port.startswith("127.0.0.1:5432:")
    assert worker["restart"] == "unless-stopped"
    assert environment["OLLAMA_HOST"] == "http://ollama:11434"

    ollama = services["ollama"]
    assert ollama["profiles"] == ["ollama"]  # only with --profile ollama
    assert ollama["image"].startswith("ollama/ollama")
    assert "healthcheck" in ollama
    assert all("profiles" not in services[name] for name in ("db", "install", "worker"))
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
    assert set(compose()["volumes"]) >= {"pgdata", "ollama"}


def test_every_command_named_exists_in_the_package() -> None:
    scripts = console_scripts()
    assert set(scripts) == {"vectorizer", "vectorizer-worker"}
    for name, target in scripts.items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), target
        assert (BIN / name).exists(), f"console script {name} is not installed"

    assert json.loads(only("ENTRYPOINT"))[0] in scripts
    install = compose()["services"]["install"]["entrypoint"]
    assert install[0] in scripts and install[1] in subcommands()
    worker_flags = compose()["services"]["worker"]["command"]
    parsed = worker_parser().parse_args(worker_flags)
    assert (parsed.concurrency, parsed.log_format) == (4, "json")
    with pytest.raises(argparse.ArgumentError):
        worker_parser().parse_args(["--concurrency", "four"])  # the parser does check flags


def test_compose_commands_run_outside_docker(
    empty_db_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    services = compose()["services"]
    install = services["install"]
    env = {**worker_env(fake), "VECTORIZER_DB_URL": empty_db_url}
    command = [str(BIN / install["entrypoint"][0]), *install["entrypoint"][1:], *install["command"]]

    first = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().endswith(" installed")
    again = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert again.returncode == 0, again.stderr
    assert "already installed" in again.stdout

    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        create_source(conn, rows=doc_rows(6))
        create_vectorizer(conn)

    worker = services["worker"]
    port = free_port()
    worker_environment = {
        **env,
        **{k: str(v) for k, v in worker["environment"].items() if k.startswith("VECTORIZER_")},
        "VECTORIZER_DB_URL": empty_db_url,
    }
    entrypoint = str(BIN / json.loads(only("ENTRYPOINT"))[0])
    flags = ["--once", "--metrics-port", str(port), "--metrics-host", "127.0.0.1"]
    result = subprocess.run(
        [entrypoint, *worker["command"], *flags],
        env=worker_environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]  # --log-format json
    messages = [record["message"] for record in records]
    assert f"metrics on http://127.0.0.1:{port}/metrics, health on /healthz" in messages
    assert any(
        r["message"] == "finished processing vectorizer" and r["items"] == 6 for r in records
    )
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        assert [row[0] for row in store_rows(conn)] == [1, 2, 3, 4, 5, 6]
