"""requirements/serve.txt, the serving image's lock, holds what pyproject's serve extra asks for: every
requirement pinned to a version its specifier allows, every pin with hashes (the Dockerfile installs it with
--require-hashes). A serve extra changed without `make lock` fails here."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "serve.txt"


def locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) from a pip-compile --generate-hashes file."""
    text = re.sub(r"\\\n\s*", " ", LOCK.read_text())
    pins: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            match = re.match(r"([A-Za-z0-9_.\-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)\s*$", line)
            assert match, f"not a hashed pin: {line!r}"
            pins[canonicalize_name(match[1])] = (match[2], re.findall(r"sha256:[0-9a-f]{64}", match[3]))
    return pins


def test_every_serve_requirement_is_pinned_with_hashes() -> None:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]
    pins = locked()
    for line in extra:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} (serve extra) is not in {LOCK.name}: run `make lock`"
        version, hashes = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), \
            f"{LOCK.name} pins {name}=={version}; the serve extra asks {requirement.specifier}: make lock"
    assert all(hashes for _, hashes in pins.values())


def test_the_lock_holds_no_training_packages() -> None:
    assert not {"torch", "onnxscript", "optuna", "mlflow"} & set(locked())
