"""The model repository: `<root>/<name>/<version>/` bundles, several models and versions at once.

A version policy picks which versions of a name to serve (`latest:N`, `all`, `specific:1,3`; the
environment's GRU_VERSION_POLICY or the model's own `<root>/<name>/serving.json`). Loading, unloading
and reloading happen through the admin API or `poll()` (the folder watch). Every change builds a new
version table and swaps it in with one assignment: a request that already holds a runtime finishes on
it, the next one gets the new table. A bundle that fails to load or verify leaves what is serving
untouched; the reason is logged, kept in `failures` and returned to the admin API.

Lifecycle hooks: `on_load(runtime)` runs after a version is loaded and before it serves; `on_unload(runtime)`
after it stopped serving (requests already holding it may still be finishing). A dynamic batcher per
loaded version starts and stops there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from service import metrics
from service.bundle import MANIFEST_FILE, NAME_PATTERN, BundleError
from service.runtime import ModelRuntime
from service.settings import Settings

log = logging.getLogger("gru_serve.repository")
SERVING_CONFIG = "serving.json"
Hook = Callable[[ModelRuntime], None]


@dataclass(frozen=True)
class VersionPolicy:
    """`latest:N` (the N highest versions), `all`, or `specific:1,3` (exactly those)."""

    latest: int | None = 1
    specific: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        kind, _, arg = text.strip().partition(":")
        try:
            if kind == "all" and not arg:
                return cls(latest=None)
            if kind == "latest" and int(arg) >= 1:
                return cls(latest=int(arg))
            if kind == "specific":
                versions = tuple(sorted({int(v) for v in arg.split(",") if v.strip()}))
                if versions and min(versions) >= 1:
                    return cls(latest=None, specific=versions)
        except ValueError:
            pass
        raise ValueError(f"version policy {text!r}: expected 'latest:N' (N >= 1), 'all' or 'specific:1,3'")

    def select(self, available: list[int]) -> list[int]:
        if self.specific:
            return [v for v in sorted(available) if v in self.specific]
        ordered = sorted(available)
        return ordered if self.latest is None else ordered[-self.latest:]


class ServingConfig(BaseModel):
    """`<root>/<name>/serving.json`: per-model serving options."""

    model_config = ConfigDict(extra="forbid")
    version_policy: str = Field(description="'latest:N', 'all' or 'specific:1,3'")

    @field_validator("version_policy")
    @classmethod
    def _valid_policy(cls, value: str) -> str:
        VersionPolicy.parse(value)
        return value


def discover(root: Path) -> dict[str, Path]:
    """Name -> newest version folder. Folders starting with '.' (exports in progress) are ignored."""
    return {name: max(versions.items())[1] for name, versions in scan(root).items() if versions}


def scan(root: Path) -> dict[str, dict[int, Path]]:
    """Name -> {version: folder} for every bundle-shaped folder under root."""
    if not root.is_dir():
        raise BundleError(f"model repository {root} is not a folder (set GRU_MODEL_REPOSITORY)")
    found: dict[str, dict[int, Path]] = {}
    for model_dir in sorted(root.iterdir()):
        if model_dir.is_dir() and NAME_PATTERN.match(model_dir.name):
            found[model_dir.name] = {int(p.name): p for p in model_dir.iterdir()
                                     if p.is_dir() and p.name.isdigit()}
    return found


def fingerprint(bundle_dir: Path) -> str:
    """Changes whenever the bundle is re-exported: the manifest holds the graph's hash and creation time."""
    try:
        return hashlib.sha256((bundle_dir / MANIFEST_FILE).read_bytes()).hexdigest()
    except OSError:
        return ""


@dataclass
class LoadReport:
    """What one load/reload of a model did; `failed` maps version -> reason."""

    name: str
    loaded: list[int] = field(default_factory=list)
    unloaded: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    serving: list[int] = field(default_factory=list)


class Repository:
    def __init__(self, settings: Settings, on_load: list[Hook] | None = None,
                 on_unload: list[Hook] | None = None):
        self.settings = settings
        self.policy = VersionPolicy.parse(settings.version_policy)
        self.on_load, self.on_unload = list(on_load or []), list(on_unload or [])
        self._versions: dict[str, dict[int, ModelRuntime]] = {}  # replaced whole, never mutated
        self._fingerprints: dict[tuple[str, int], str] = {}
        self.failures: dict[tuple[str, int], str] = {}  # (name, version) -> why it is not serving
        self._failed_prints: dict[tuple[str, int], str] = {}  # the watch does not retry an unchanged failure
        self.unloaded_by_admin: set[str] = set()  # the folder watch leaves these alone
        self._lock = threading.Lock()  # one change at a time (admin API and folder watch)
        self.started = False

    # --- reading: lock-free, on the current table ---
    @property
    def models(self) -> dict[str, ModelRuntime]:
        """Name -> the default runtime: the newest loaded version."""
        return {name: table[max(table)] for name, table in self._versions.items() if table}

    @property
    def ready(self) -> bool:
        return self.started and any(self._versions.values())

    def get(self, name: str, version: int | None = None) -> ModelRuntime | None:
        table = self._versions.get(name)
        if not table:
            return None
        return table.get(version) if version is not None else table[max(table)]

    def versions(self, name: str) -> list[int]:
        return sorted(self._versions.get(name, {}))

    def index(self) -> list[dict]:
        """Every bundle on disk with its state: READY (serving) or UNAVAILABLE and why."""
        entries = []
        for name, found in scan(self.settings.model_repository).items():
            for version in sorted(found):
                serving = version in self._versions.get(name, {})
                reason = self.failures.get((name, version), "")
                if not serving and not reason:
                    reason = ("unloaded" if name in self.unloaded_by_admin
                              else "not selected by the version policy")
                entries.append({"name": name, "version": str(version),
                                "state": "READY" if serving else "UNAVAILABLE", "reason": reason})
        return entries

    # --- changing: under the lock, swapping the table ---
    def load_all(self) -> None:
        """Start-up: load every model's selected versions; a bundle that fails stops start-up, saying why."""
        for name in scan(self.settings.model_repository):
            report = self.load_model(name)
            if report.failed:
                version, reason = next(iter(report.failed.items()))
                raise BundleError(f"{name} version {version}: {reason}")
        if not self._versions:
            log.warning("no model bundles under %s; readiness stays false", self.settings.model_repository)
        self.started = True

    def load_model(self, name: str) -> LoadReport:
        """(Re)load one model from its folder under the policy: new or re-exported versions are loaded and
        swapped in, versions no longer selected or gone are unloaded. Failures keep what serves."""
        with self._lock:
            self.unloaded_by_admin.discard(name)
            return self._sync(name, retry_failed=True)

    def unload_model(self, name: str) -> LoadReport:
        with self._lock:
            self.unloaded_by_admin.add(name)
            report = LoadReport(name, unloaded=self.versions(name))
            self._swap(name, {})
            return report

    def poll(self) -> list[LoadReport]:
        """The folder watch: apply every change on disk (new, re-exported, removed bundles and models)."""
        with self._lock:
            on_disk = scan(self.settings.model_repository)
            names = (set(on_disk) | set(self._versions)) - self.unloaded_by_admin
            reports = [self._sync(name, on_disk.get(name, {})) for name in sorted(names)]
        return [r for r in reports if r.loaded or r.unloaded or r.failed]

    def close(self) -> None:
        with self._lock:
            for name in list(self._versions):
                self._swap(name, {})
            self.started = False

    def _sync(self, name: str, found: dict[int, Path] | None = None,
              retry_failed: bool = False) -> LoadReport:
        if found is None:
            found = scan(self.settings.model_repository).get(name, {})
            if not found:
                raise BundleError(f"no bundles for model {name!r} under {self.settings.model_repository}")
        report = LoadReport(name)
        try:
            wanted = self._policy_for(name).select(list(found))
        except (ValueError, BundleError) as exc:
            report.failed[0] = str(exc)
            log.error("%s: %s; serving versions unchanged", name, exc)
            return report
        current = self._versions.get(name, {})
        fresh: dict[int, ModelRuntime] = {}
        short = False  # a wanted version is not serving
        for version in wanted:
            print_ = fingerprint(found[version])
            if version in current and self._fingerprints.get((name, version)) == print_:
                continue
            if not retry_failed and self._failed_prints.get((name, version)) == print_:
                short = True  # failed before and unchanged since: the reason is already in `failures`
                continue
            runtime = self._load_one(name, version, found[version], report)
            if runtime is None:
                self._failed_prints[(name, version)] = print_
                short = True
            else:
                fresh[version] = runtime
                self._fingerprints[(name, version)] = print_
                self._failed_prints.pop((name, version), None)
        # A failure never shrinks what serves: then only versions gone from disk are retired.
        keep = {v: r for v, r in current.items() if v in (found if short else wanted)}
        table = keep | fresh
        report.unloaded = sorted(v for v in current if table.get(v) is not current[v])
        report.loaded.sort()
        self._swap(name, table)
        report.serving = sorted(table)
        return report

    def _load_one(self, name: str, version: int, bundle_dir: Path, report: LoadReport) -> ModelRuntime | None:
        runtime = ModelRuntime(bundle_dir, self.settings)
        try:
            runtime.load()
            for hook in self.on_load:
                hook(runtime)
        except Exception as exc:  # a bad bundle, or a hook that failed: keep what serves
            reason = str(exc) if isinstance(exc, BundleError) else f"{type(exc).__name__}: {exc}"
            report.failed[version] = reason
            self.failures[(name, version)] = reason
            metrics.MODEL_LOAD_FAILURES.labels(name).inc()
            log.error("%s version %s failed to load; serving versions unchanged: %s", name, version, reason)
            return None
        self.failures.pop((name, version), None)
        metrics.MODEL_LOAD_SECONDS.labels(name).observe(runtime.load_seconds)
        report.loaded.append(version)
        log.info("loaded %s version %s on %s in %.2fs", name, version, runtime.provider, runtime.load_seconds)
        return runtime

    def _policy_for(self, name: str) -> VersionPolicy:
        path = self.settings.model_repository / name / SERVING_CONFIG
        if not path.is_file():
            return self.policy
        try:
            config = ServingConfig.model_validate(json.loads(path.read_text()))
            return VersionPolicy.parse(config.version_policy)
        except (OSError, ValueError, ValidationError) as exc:
            raise BundleError(f"{path}: {exc}") from exc

    def _swap(self, name: str, table: dict[int, ModelRuntime]) -> None:
        """One assignment publishes the new table; then the retired runtimes are told they stopped serving."""
        old = self._versions.get(name, {})
        versions = {**self._versions, name: table}
        if not table:
            versions.pop(name)
        self._versions = versions
        for version, runtime in old.items():
            if table.get(version) is runtime:
                continue
            metrics.MODEL_LOADED.labels(name, str(version)).set(0)
            if version not in table:
                self._fingerprints.pop((name, version), None)
            for hook in self.on_unload:
                try:
                    hook(runtime)
                except Exception:  # one hook's failure must not stop the swap
                    log.exception("on_unload hook failed for %s version %s", name, version)
            log.info("retired %s version %s", name, version)
        for version in table:
            metrics.MODEL_LOADED.labels(name, str(version)).set(1)
