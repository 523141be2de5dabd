"""The model repository: `<root>/<name>/<version>/` bundles, several models and versions at once.

A version policy picks which versions of a name to serve (`latest:N`, `all`, `specific:1,3`; the
environment's GRU_VERSION_POLICY or the model's own `<root>/<name>/serving.json`). Loading, unloading
and reloading happen through the admin API or `poll()` (the folder watch). Every change builds a new
version table and swaps it in with one assignment: a request that already holds a runtime finishes on
it, the next one gets the new table.

Degrade, never strand: each model serves the newest versions on disk that load and that its policy
allows. A version that fails to load is skipped for the next older one (`latest:N`); a serving version
whose folder is removed gives way to the newest older one that loads; a serving version whose files
change and then fail keeps serving the files it loaded. Only when no version on disk loads does the
model keep what it served, or (at start-up) serve nothing, with the reasons logged and in `index()`.
A failed version is retried as soon as any of its files changes (size, mtime or inode), so a folder
copied in non-atomically loads at the first poll after the copy finished.

What is never loaded: folders whose name is not a canonical version number (ASCII digits, no sign, no
leading zero: `²`, `02`, `-1`, `1.0`, ` 3` are ignored), folders starting with '.' (exports in
progress), and folders or bundle files that resolve outside the repository (symlinks). Each ignored
folder is logged once and listed in `index()` with the reason.

Lifecycle hooks: `on_load(runtime)` runs after a version is loaded and before it serves; `on_unload(runtime)`
after it stopped serving (requests already holding it may still be finishing). A dynamic batcher per
loaded version starts and stops there.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from service import metrics
from service.bundle import MANIFEST_FILE, BundleError, name_problem
from service.runtime import ModelRuntime
from service.settings import Settings

log = logging.getLogger("gru_serve.repository")
SERVING_CONFIG = "serving.json"
VERSION_FOLDER = re.compile(r"[1-9][0-9]{0,17}", re.ASCII)  # fullmatch: canonical, fits an int64
Hook = Callable[[ModelRuntime], None]
Fingerprint = tuple[tuple[str, int, int, int], ...]


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
        """The versions this policy serves when every one of them loads."""
        if self.specific:
            return [v for v in sorted(available) if v in self.specific]
        ordered = sorted(available)
        return ordered if self.latest is None else ordered[-self.latest:]

    def candidates(self, available: list[int]) -> list[int]:
        """The versions it may serve, newest first: `latest:N` falls back to older ones."""
        return sorted((v for v in available if not self.specific or v in self.specific), reverse=True)


class ServingConfig(BaseModel):
    """`<root>/<name>/serving.json`: per-model serving options."""

    model_config = ConfigDict(extra="forbid")
    version_policy: str = Field(description="'latest:N', 'all' or 'specific:1,3'")

    @field_validator("version_policy")
    @classmethod
    def _valid_policy(cls, value: str) -> str:
        VersionPolicy.parse(value)
        return value


@dataclass
class Scan:
    """What is on disk: bundle-shaped folders, and the folders ignored with the reason."""

    versions: dict[str, dict[int, Path]] = field(default_factory=dict)  # name -> version -> folder
    ignored: dict[Path, str] = field(default_factory=dict)  # folder -> why it is never loaded
    unreadable: set[str] = field(default_factory=set)  # model folders that could not be listed


def scan(root: Path) -> Scan:
    """Every model and version folder under root; the ones that cannot be versions go to `ignored`."""
    if not root.is_dir():
        raise BundleError(f"model repository {root} is not a folder (set GRU_MODEL_REPOSITORY)")
    found, real_root = Scan(), root.resolve()
    for model_dir in _folders(root, found, "repository"):
        if problem := name_problem(model_dir.name):
            found.ignored[model_dir] = f"model folder name {problem}"
        elif outside := _outside(model_dir, real_root):
            found.ignored[model_dir] = outside
        else:
            found.versions[model_dir.name] = _versions(model_dir, real_root, found)
    return found


def _folders(parent: Path, found: Scan, what: str) -> list[Path]:
    """Sub-folders, not hidden ('.staging-*' is an export in progress), in name order."""
    try:
        return sorted(p for p in parent.iterdir() if not p.name.startswith(".") and p.is_dir())
    except OSError as exc:
        if what == "repository":
            raise BundleError(f"model repository {parent} cannot be listed: {exc.strerror}") from exc
        found.unreadable.add(parent.name)
        found.ignored[parent] = f"cannot list the model folder: {exc.strerror}"
        return []


def _versions(model_dir: Path, real_root: Path, found: Scan) -> dict[int, Path]:
    versions = {}
    for folder in _folders(model_dir, found, "model"):
        if not VERSION_FOLDER.fullmatch(folder.name):
            found.ignored[folder] = ("not a version number: version folders are named 1, 2, 3, ... "
                                     "(ASCII digits, no sign, no leading zero)")
        elif outside := _outside(folder, real_root):
            found.ignored[folder] = outside
        else:
            versions[int(folder.name)] = folder
    return versions


def _outside(path: Path, real_root: Path) -> str:
    """Why `path` may not be loaded ('' if it may): it resolves outside the repository."""
    try:
        target = path.resolve(strict=True)
    except OSError as exc:
        return f"cannot resolve: {exc.strerror}"
    if target.is_relative_to(real_root):
        return ""
    return ("resolves outside the model repository (a symbolic link?); bundles load only from inside "
            "GRU_MODEL_REPOSITORY: copy or mount them there")


def _text(file_name: str) -> str:
    """A folder name as text any client can decode: bytes that are not UTF-8 (Python keeps them as lone
    surrogates, which no JSON or protobuf encoder takes) are written as \\xNN."""
    return file_name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def discover(root: Path) -> dict[str, Path]:
    """Name -> newest version folder."""
    return {name: max(versions.items())[1] for name, versions in scan(root).versions.items() if versions}


def fingerprint(bundle_dir: Path) -> Fingerprint:
    """Changes whenever a bundle file is replaced, rewritten or grows: inode, size and mtime of the
    manifest and the graph(s), and of the folder itself. () if the folder cannot be read."""
    try:
        files = [p for p in bundle_dir.iterdir() if p.name == MANIFEST_FILE or p.suffix == ".onnx"]
        stats = [(p.name, p.stat()) for p in [bundle_dir, *sorted(files)]]
    except OSError:
        return ()
    return tuple((name, st.st_ino, st.st_size, st.st_mtime_ns) for name, st in stats)


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
        self._prints: dict[tuple[str, int], Fingerprint] = {}  # the files each serving runtime came from
        self.failures: dict[tuple[str, int], str] = {}  # (name, version) -> why it did not load
        self._failed_prints: dict[tuple[str, int], Fingerprint] = {}  # retried only once its files change
        self._notes: dict[tuple[str, int], str] = {}  # why a serving version serves in place of another
        self._policy_errors: dict[str, str] = {}  # name -> why its serving.json cannot be used
        self._logged: set[tuple[Path, str]] = set()  # ignored folders and model errors, logged once
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
        """Every bundle on disk (and every serving one) with its state: READY, or UNAVAILABLE and why;
        a READY version says why when it serves in place of another or from files since changed."""
        found, root = self._scan(), self.settings.model_repository
        entries = [{"name": _text(folder.name if folder.parent == root else folder.parent.name),
                    "version": "" if folder.parent == root else _text(folder.name),
                    "state": "UNAVAILABLE", "reason": f"ignored: {why}"}
                   for folder, why in found.ignored.items()]
        for name in sorted(set(found.versions) | set(self._versions)):
            on_disk, serving = found.versions.get(name, {}), self._versions.get(name, {})
            for version in sorted(set(on_disk) | set(serving)):
                reason = self._reason(name, version, version in serving, version in on_disk)
                entries.append({"name": name, "version": str(version),
                                "state": "READY" if version in serving else "UNAVAILABLE", "reason": reason})
        return entries

    def _reason(self, name: str, version: int, serving: bool, on_disk: bool) -> str:
        failure, note = self.failures.get((name, version), ""), self._notes.get((name, version), "")
        if serving:
            parts = [note, "" if on_disk else "its folder was removed; it serves until another version "
                     "loads", f"serving the files loaded before; the files on disk failed: {failure}"
                     if failure else ""]
            return "; ".join(p for p in parts if p)
        if failure:
            return failure
        if name in self._policy_errors:
            return self._policy_errors[name]
        return "unloaded" if name in self.unloaded_by_admin else "not selected by the version policy"

    # --- changing: under the lock, swapping the table ---
    def load_all(self) -> None:
        """Start-up: every model serves the newest versions that load. A bundle that fails never stops
        start-up (it is logged and in the index); a repository folder that is missing does."""
        for name, versions in self._scan().versions.items():
            report = self.load_model(name) if versions else LoadReport(name)  # e.g. a folder being copied
            if not report.serving:
                log.error("%s: no version loads; it serves nothing until one does (%s)", name,
                          "; ".join(f"version {v}: {r}" for v, r in report.failed.items()) or "no versions")
        if not self._versions:
            log.warning("no model serves from %s; readiness stays false", self.settings.model_repository)
        self.started = True

    def load_model(self, name: str) -> LoadReport:
        """(Re)load one model from its folder under the policy: new or re-exported versions are loaded and
        swapped in, versions no longer selected or gone are unloaded; every failed version is retried."""
        with self._lock:
            found = self._scan().versions.get(name)
            if not found:
                raise BundleError(f"no bundles for model {name!r}: no folder {name}/<version>/ in the model "
                                  "repository")
            self.unloaded_by_admin.discard(name)
            return self._sync(name, found, retry_failed=True)

    def unload_model(self, name: str) -> LoadReport:
        with self._lock:
            self.unloaded_by_admin.add(name)
            report = LoadReport(name, unloaded=self.versions(name))
            self._swap(name, {})
            return report

    def poll(self) -> list[LoadReport]:
        """The folder watch: apply every change on disk (new, re-exported, removed bundles and models).
        One model's trouble is logged and leaves the others' reload alone."""
        reports = []
        with self._lock:
            on_disk = self._scan()
            names = (set(on_disk.versions) | set(self._versions)) - self.unloaded_by_admin
            for name in sorted(names - on_disk.unreadable):
                try:
                    reports.append(self._sync(name, on_disk.versions.get(name, {})))
                except Exception as exc:  # never let one model stop the watch for the others
                    self._log_once(self.settings.model_repository / name, f"{type(exc).__name__}: {exc}")
        return [r for r in reports if r.loaded or r.unloaded or r.failed]

    def close(self) -> None:
        with self._lock:
            for name in list(self._versions):
                self._swap(name, {})
            self.started = False

    def _scan(self) -> Scan:
        found = scan(self.settings.model_repository)
        for folder, why in found.ignored.items():
            self._log_once(folder, f"ignored: {why}")
        return found

    def _log_once(self, path: Path, message: str) -> None:
        if (path, message) not in self._logged:
            self._logged.add((path, message))
            log.error("%s: %s", self._relative(str(path)), message)

    def _relative(self, text: str) -> str:
        """A message with the repository's own path left out: files named <name>/<version>/<file>, as the
        index serves them to clients (the server's paths are not theirs to know)."""
        root = self.settings.model_repository
        for prefix in sorted({str(root.resolve()), str(root.absolute()), str(root)}, key=len, reverse=True):
            text = text.replace(prefix.rstrip("/") + "/", "")
        return text

    def _sync(self, name: str, found: dict[int, Path], retry_failed: bool = False) -> LoadReport:
        report = LoadReport(name)
        try:
            policy = self._policy_for(name)
        except BundleError as exc:  # reported once per change (the folder watch retries at every poll)
            reason = self._relative(str(exc))
            if retry_failed or self._policy_errors.get(name) != reason:
                report.failed[0] = reason
                log.error("%s: %s; serving versions unchanged", name, reason)
            self._policy_errors[name] = reason
            return report
        self._policy_errors.pop(name, None)
        current = self._versions.get(name, {})
        table: dict[int, ModelRuntime] = {}
        for version in policy.candidates(list(found)):
            if policy.latest is not None and len(table) == policy.latest:
                break
            runtime = self._runtime(name, version, found[version], current.get(version), retry_failed, report)
            if runtime is not None:
                table[version] = runtime
        if not table and found:
            table = dict(current)  # nothing on disk loads: never strand what serves
        changed = table.keys() != current.keys() or any(table[v] is not current[v] for v in table)
        if changed:
            self._explain(name, policy.select(list(found)), found, current, table)
        report.unloaded = sorted(v for v in current if table.get(v) is not current[v])
        report.loaded.sort()
        self._swap(name, table)
        report.serving = sorted(table)
        return report

    def _runtime(self, name: str, version: int, folder: Path, current: ModelRuntime | None,
                 retry_failed: bool, report: LoadReport) -> ModelRuntime | None:
        """The runtime to serve `version`: the current one while its files are unchanged, else a fresh
        load; a load that fails keeps the current one (if any). A failure is retried when files change."""
        key, print_ = (name, version), fingerprint(folder)
        if current is not None and self._prints.get(key) == print_:
            return current
        if not retry_failed and self._failed_prints.get(key) == print_:
            return current  # failed before and unchanged since: the reason is already in `failures`
        runtime = self._load_one(name, version, folder, report)
        if runtime is None:
            self._failed_prints[key] = print_
            return current
        self._prints[key] = print_
        self._failed_prints.pop(key, None)
        return runtime

    def _explain(self, name: str, wanted: list[int], found: dict[int, Path],
                 current: dict[int, ModelRuntime], table: dict[int, ModelRuntime]) -> None:
        """Note (and log) why a version serves in place of a newer one the policy wanted or that served."""
        missing = (set(wanted) | {v for v in current if v not in found}) - set(table)
        for version in table:
            newer = sorted(v for v in missing if v > version)
            why = "; ".join(f"version {v} {'was removed' if v not in found else 'failed to load'}"
                            for v in newer)
            if newer:
                self._notes[(name, version)] = f"serving in place of newer versions: {why}"
                log.warning("%s: version %s serves in place of newer versions: %s", name, version, why)
            else:
                self._notes.pop((name, version), None)

    def _load_one(self, name: str, version: int, bundle_dir: Path, report: LoadReport) -> ModelRuntime | None:
        runtime = ModelRuntime(bundle_dir, self.settings)
        try:
            self._inside(bundle_dir)
            runtime.load()
            for hook in self.on_load:
                hook(runtime)
        except Exception as exc:  # a bad bundle, or a hook that failed: keep what serves
            reason = str(exc) if isinstance(exc, BundleError) else f"{type(exc).__name__}: {exc}"
            reason = self._relative(reason)
            report.failed[version] = reason
            self.failures[(name, version)] = reason
            metrics.MODEL_LOAD_FAILURES.labels(name).inc()
            log.error("%s version %s failed to load: %s", name, version, reason)
            return None
        self.failures.pop((name, version), None)
        metrics.MODEL_LOAD_SECONDS.labels(name).observe(runtime.load_seconds)
        report.loaded.append(version)
        log.info("loaded %s version %s on %s in %.2fs", name, version, runtime.provider, runtime.load_seconds)
        return runtime

    def _inside(self, bundle_dir: Path) -> None:
        """The bundle's files must not lead outside the repository either (a symlinked model.onnx)."""
        real_root = self.settings.model_repository.resolve()
        for path in sorted(bundle_dir.iterdir()):
            if (path.name == MANIFEST_FILE or path.suffix == ".onnx") and (why := _outside(path, real_root)):
                raise BundleError(f"{path}: {why}")

    def _policy_for(self, name: str) -> VersionPolicy:
        path = self.settings.model_repository / name / SERVING_CONFIG
        if not path.is_file():
            return self.policy
        if why := _outside(path, self.settings.model_repository.resolve()):
            raise BundleError(f"{path}: {why}")
        try:
            config = ServingConfig.model_validate_json(path.read_bytes())
        except OSError as exc:
            raise BundleError(f"{path}: cannot read it ({exc.strerror})") from exc
        except ValidationError as exc:  # the messages only: never the file's content
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(document)'}: {e['msg']}"
                                 for e in exc.errors()[:3])
            raise BundleError(f"{path}: {problems}") from exc
        return VersionPolicy.parse(config.version_policy)

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
                self._prints.pop((name, version), None)
                self._notes.pop((name, version), None)
            for hook in self.on_unload:
                try:
                    hook(runtime)
                except Exception:  # one hook's failure must not stop the swap
                    log.exception("on_unload hook failed for %s version %s", name, version)
            log.info("retired %s version %s", name, version)
        for version in table:
            metrics.MODEL_LOADED.labels(name, str(version)).set(1)
