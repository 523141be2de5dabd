"""Every request/answer example of README.md and docs/ runs against a real server, and every `gru ...`
command line in them parses with the real parser, so no example can go stale.

A block marked `<!-- example -->` is run as written (bash, or python), with `localhost:8000` pointing at
a `gru serve` started here on tiny models of the documented names, and `gru predict` at that server.
When a JSON block follows, the output must match it: the same keys, list lengths, strings, integers and
booleans (tests/docs/examples.py `mismatches`); the tiny models' probabilities differ from the docs'.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.examples import (
    ROOT,
    Example,
    command_lines,
    documented_scripts,
    json_documents,
    marked_examples,
    mismatches,
    repository_paths,
)
from tests.helpers import Server

EXAMPLES = marked_examples()
COMMANDS = command_lines()


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory, italy_run, regimes_run, vowels_bi_run):
    """The models the docs talk to, under their names: italy_power (`make run`'s), regimes (tagging),
    japanese_vowels (bidirectional)."""
    from export.bundle import export_checkpoint

    root = tmp_path_factory.mktemp("docs") / "models"
    runs = {"italy_power": italy_run, "regimes": regimes_run, "japanese_vowels": vowels_bi_run}
    for name, run in runs.items():
        export_checkpoint(run.checkpoint, root, name)
    running = Server(root, grpc=True, GRU_STATE_SECRET="docs-secret-0123456789").start()
    yield running
    running.stop()


def shell_env(server: Server, tmp_path: Path) -> dict[str, str]:
    """PATH with `python` and a `gru` that runs this tree's CLI (`gru predict` aimed at the server)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    gru = bin_dir / "gru"
    gru.write_text(f'#!/bin/sh\nif [ "$1" = predict ]; then exec {sys.executable} -m gru_cli "$@" '
                   f'--url {server.url}; fi\nexec {sys.executable} -m gru_cli "$@"\n')
    gru.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}


def aimed(code: str, server: Server) -> str:
    address = server.url.removeprefix("http://")
    grpc = f"127.0.0.1:{server.env['GRU_GRPC_PORT']}"
    for host in ("localhost", "127.0.0.1"):
        code = code.replace(f"{host}:8000", address).replace(f"{host}:8001", grpc)
    return code


@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_example_answers_as_documented(example: Example, docs_server: Server, tmp_path: Path) -> None:
    for tool in ("curl", "jq"):  # what the examples' readers run them with (CI installs both)
        if re.search(rf"\b{tool}\b", example.code) and not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (apt-get install {tool})")
    if example.language == "bash":
        command = ["bash", "-e", "-o", "pipefail", "-c", aimed(example.code, docs_server)]
    else:
        assert example.language == "python", f"{example}: run bash or python examples, not {example.language}"
        command = [sys.executable, "-c", aimed(example.code, docs_server)]
    done = subprocess.run(command, cwd=ROOT, env=shell_env(docs_server, tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"{example} failed:\n{done.stderr}\n{done.stdout}"
    if example.answer is None:
        return
    expected, actual = json_documents(example.answer), json_documents(done.stdout)
    assert len(actual) == len(expected), f"{example}: {len(actual)} answers, documented {len(expected)}"
    problems = [m for e, a in zip(expected, actual, strict=True) for m in mismatches(e, a)]
    assert not problems, f"{example} answers otherwise than documented:\n" + "\n".join(problems)


def test_examples_are_found() -> None:
    """The README's request and the guides' examples are all marked (a lost marker would skip them)."""
    pages = {example.page for example in EXAMPLES}
    assert {"README.md", "docs/guides/getting-started.md", "docs/guides/requests.md",
            "docs/guides/streaming.md"} <= pages
    assert all(example.answer is not None for example in EXAMPLES if example.language == "bash")


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[where for where, _ in COMMANDS])
def test_command_line_parses(where: str, argv: list[str]) -> None:
    """The flags of every documented `gru` command exist and take the values shown."""
    import importlib

    import gru_cli
    from scripts.docs_reference import cli_parser

    module = importlib.import_module(gru_cli.COMMANDS[argv[0]][0])
    argv = getattr(module, "prepare_argv", list)(argv)
    try:
        cli_parser().parse_args(argv)
    except SystemExit as exit_:
        pytest.fail(f"{where}: `gru {' '.join(argv)}` does not parse (exit {exit_.code})")


def documented_overrides() -> list[tuple[str, str | None, list[str]]]:
    """(where, config file or None, --set overrides) of every documented `gru train` / `gru tune`."""
    found = []
    for where, argv in COMMANDS:
        if argv[0] in ("train", "tune"):
            sets = [argv[i + 1] for i, word in enumerate(argv[:-1]) if word == "--set"]
            sets += [word.removeprefix("--set=") for word in argv if word.startswith("--set=")]
            config = argv[argv.index("--config") + 1] if "--config" in argv else None
            found.append((where, config, sets))
    return found


@pytest.mark.parametrize(("where", "config", "sets"), documented_overrides(),
                         ids=[where for where, *_ in documented_overrides()])
def test_documented_config_overrides_validate(where: str, config: str | None, sets: list[str]) -> None:
    """`--set section.key=value` names a real key with a valid value (and `--config` a file that ships)."""
    from training.config import load_config

    shipped = ROOT / config if config is not None and (ROOT / config).exists() else None
    load_config(shipped, sets)


# Config fields a user does not set: filled in from the data, or the run's plumbing.
FROM_THE_DATA = {"model.input_size", "model.task", "model.output_size", "model.window_scaling", "run_dir",
                 "progress", "data.id_column", "data.time_column", "data.feature_columns",
                 "data.target_column"}


def test_training_config_table_matches_the_config() -> None:
    """docs/guides/training.md's configuration table names every key a user sets, and no other."""
    from pydantic import BaseModel

    from training.config import DataConfig, ModelConfig, OptimConfig, TrainConfig

    sections: dict[str, type[BaseModel]] = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig}
    fields = {name for name in TrainConfig.model_fields if name not in sections}
    fields |= {f"{section}.{name}" for section, config in sections.items() for name in config.model_fields}
    table = (ROOT / "docs/guides/training.md").read_text().split("## Configuration", 1)[1].split("\n## ")[0]
    documented = {key for row in re.findall(r"^\| (.+?) \|", table, re.MULTILINE)
                  for key in re.findall(r"`([a-z_.]+)`", row)}
    assert documented - fields == set(), "the table names keys the config does not have"
    assert fields - FROM_THE_DATA - documented == set(), "config keys missing from the table"


@pytest.mark.parametrize(("page", "path", "flags"), documented_scripts(),
                         ids=[f"{page}:{path}" for page, path, _ in documented_scripts()])
def test_documented_scripts_and_flags_exist(page: str, path: str, flags: list[str]) -> None:
    """A benchmark or script the docs run exists and defines each flag they pass it."""
    source = (ROOT / path).read_text()
    missing = [flag for flag in flags if f'"{flag}"' not in source]
    assert not missing, f"{page}: {path} has no {missing}"


@pytest.mark.parametrize(("page", "path"), repository_paths(),
                         ids=[f"{page}:{path}" for page, path in repository_paths()])
def test_named_files_exist(page: str, path: str) -> None:
    """A file or folder the docs point at is there (a module renamed or moved leaves no stale pointer)."""
    assert (ROOT / path).exists(), f"{page} names {path}, which is not in the repository"


def test_readme_is_a_front_page() -> None:
    """Short, with the two quick-start commands as CI and newcomers run them; the manual is docs/."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert "\nmake run " in readme and "\nmake test " in readme and ".venv/bin" in readme


def test_readme_links_resolve() -> None:
    """mkdocs --strict checks the site's links; the README is outside it, so its links are checked here."""
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    assert links and [link for link in links if not (ROOT / link).exists()] == []
