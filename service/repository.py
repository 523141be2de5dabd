"""The model repository: `<root>/<name>/<version>/` bundles; the newest version of each name is served."""

from __future__ import annotations

import logging
from pathlib import Path

from service.bundle import NAME_PATTERN, BundleError
from service.runtime import ModelRuntime
from service.settings import Settings

log = logging.getLogger("gru_serve.repository")


def discover(root: Path) -> dict[str, Path]:
    """Name -> newest version folder. Folders starting with '.' (exports in progress) are ignored."""
    if not root.is_dir():
        raise BundleError(f"model repository {root} is not a folder (set GRU_MODEL_REPOSITORY)")
    found: dict[str, Path] = {}
    for model_dir in sorted(root.iterdir()):
        if not model_dir.is_dir() or not NAME_PATTERN.match(model_dir.name):
            continue
        versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
        if versions:
            found[model_dir.name] = max(versions, key=lambda p: int(p.name))
    return found


class Repository:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.models: dict[str, ModelRuntime] = {}
        self.ready = False

    def load_all(self) -> None:
        """Load and warm up every model; a bundle that fails stops start-up with its reason."""
        for name, bundle_dir in discover(self.settings.model_repository).items():
            runtime = ModelRuntime(bundle_dir, self.settings)
            runtime.load()
            self.models[name] = runtime
            log.info("loaded %s version %s on %s in %.2fs", name, runtime.manifest.version,
                     runtime.provider, runtime.load_seconds)
        if not self.models:
            log.warning("no model bundles under %s; readiness stays false", self.settings.model_repository)
        self.ready = bool(self.models)

    def get(self, name: str) -> ModelRuntime | None:
        return self.models.get(name)
