"""Model files on disk: versioned sets published in one atomic step, safe names, loading.

Layout for ``SAVE TO 'models/income/{key}.skops'`` (PER: the folder before
``{key}`` holds the set)::

    models/income -> .income.versions/v000003       # the pointer: a symlink
    models/.income.versions/
        v000002/                                    # kept for roll-back
        v000003/
            bachelors-3f2ac9e1b7d0.skops            # key_name(("Bachelors",))
            manifest.json
        .staging-<run>/                             # a run in progress
        .staging-<run>.lock                         # held by that run

and for ``SAVE TO 'models/income_global.skops'`` (no PER: the file is the
pointer)::

    models/income_global.skops -> .income_global.skops.versions/v000001/income_global.skops

A TRAIN run writes every model into its own staging folder, then
:meth:`ModelStore.publish` writes the manifest there, renames the folder to
the next version and swaps the pointer with one ``rename``: readers (MODEL,
PER, FALLBACK, REFRESH) resolve the pointer once and read one whole set, the
previous one or the new one, never a mix. A run killed at any instant leaves
the previous set serving; its staging folder is removed by the next run (its
lock is free once the process is gone). The last :data:`KEEP_VERSIONS`
versions stay; roll back by pointing the symlink at an older one
(docs/TRAINING.md).

A key becomes a file name through :func:`key_name`: bounded length, safe
characters, and a hash of the exact key, so any key (unicode, ``/``,
``..``, NUL, 1,000 bytes) is one file in the set and two keys never share
one, even on case-insensitive file systems. The manifest keeps the real key.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import signal
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

MANIFEST_VERSION = 2
MANIFEST = "manifest.json"
KEEP_VERSIONS = 3
SKOPS_SUFFIXES = (".skops",)
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
MODEL_SUFFIXES = SKOPS_SUFFIXES + PICKLE_SUFFIXES
_SLUG_BYTES = 40
_VERSION = re.compile(r"^v(\d{6,})$")

# Staging locks this process holds, by path: the lock lives as long as the run.
_HELD: dict[str, int] = {}
_SAVED = [0]  # models this process saved, for the crash points
_SAVED_LOCK = threading.Lock()


def _crash_point(name: str) -> None:
    """A test hook: ``BEAM_DSL_CRASH_AT=<name>`` kills this process right here with SIGKILL
    (no clean-up of any kind), so tests can prove a run killed at that instant leaves the
    published models whole. Points: ``begin``, ``saved:<n>``, ``before_swap``, ``after_swap``."""
    if os.environ.get("BEAM_DSL_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


# The types skops does not trust by default that a model beam_dsl's TRAIN writes holds, by
# the USING estimator's dotted-name prefix. A MODEL serving the models of a TRAIN in the
# same pipeline trusts these (the spec, which is code, names the estimator); nothing stored
# beside the files can add to them. They are data structures rebuilt from arrays, which
# run no code of the file's choosing (skops leaves Tree out of its defaults because a forged
# one can crash the process that predicts with it: a forged file is a denial of service).
_VOUCHED = {
    "sklearn.tree.": ("sklearn.tree._tree.Tree",),
    "sklearn.ensemble.": (
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    ),
    "sklearn.neighbors.": (
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.metrics._dist_metrics.EuclideanDistance64",
    ),
}


def vouched_types(estimator: str) -> tuple[str, ...]:
    """The skops types beam_dsl vouches for in models TRAIN fits with ``estimator``."""
    return next((t for prefix, t in _VOUCHED.items() if estimator.startswith(prefix)), ())


class ModelStoreError(ValueError):
    """A model file, manifest or store folder that cannot be used, with the reason."""


def key_id(key: Sequence[Any]) -> str:
    """The canonical text of a key tuple (its JSON), as manifests and lookups use it."""
    return json.dumps(list(key), ensure_ascii=False, separators=(",", ":"))


def key_name(key: Sequence[Any]) -> str:
    """A file name for ``key``: a readable slug of at most 40 bytes, then 12 hex of its hash.

    ``("Bachelors",)`` -> ``bachelors-<hash>``. The slug keeps ASCII letters,
    digits, ``_`` and ``-`` (lower-cased); everything else becomes ``_``. The
    hash is of the exact key, so different keys never share a name.
    """
    text = "+".join("" if v is None else str(v) for v in key)
    slug = re.sub(r"[^a-z0-9_-]+", "_", text.lower()).strip("_")[:_SLUG_BYTES] or "key"
    digest = hashlib.sha256(key_id(key).encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{slug}-{digest}"


class ModelStore:
    """The published models of one SAVE TO template."""

    def __init__(self, template: str):
        self.template = template
        self.per = "{key}" in template
        if self.per:
            self.pointer = os.path.dirname(template.split("{key}", 1)[0]) or "."
            self._rest = template[len(self.pointer):].lstrip("/")
        else:
            self.pointer, self._rest = template, os.path.basename(template)
        parent, base = os.path.split(os.path.normpath(self.pointer))
        self.versions_dir = os.path.join(parent, f".{base}.versions")

    # ------------------------------------------------------------ reading

    def current(self) -> str | None:
        """The folder of the version the pointer names now, or None before any publish."""
        try:
            target = os.readlink(self.pointer)
        except OSError:
            # A set copied without its symlink (cp -r, rsync -L) is a plain folder: read it.
            copied = self.per and os.path.isfile(os.path.join(self.pointer, MANIFEST))
            return self.pointer if copied else None
        path = os.path.normpath(os.path.join(os.path.dirname(self.pointer), target))
        return path if self.per else os.path.dirname(path)

    def manifest(self, version: str | None = None) -> dict[str, Any] | None:
        """The manifest of ``version`` (default: the current one); None where there is none.

        Its shape: ``{"version": 2, "models": [{"key": [values], "file": path
        relative to the version folder, "sha256": ..., "rows": n, "metrics":
        {...}, "promoted": bool}, ...], ...}``.
        """
        version = version or self.current()
        if version is None:
            return None
        path = os.path.join(version, MANIFEST)
        try:
            with open(path, encoding="utf-8") as f:
                manifest = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise ModelStoreError(f"manifest '{path}' cannot be read: {e}") from e
        if not isinstance(manifest, dict) or not isinstance(manifest.get("models"), list):
            raise ModelStoreError(f"manifest '{path}' is not a beam_dsl manifest")
        return manifest

    def promoted(self) -> dict[str, str] | None:
        """The promoted models of the current version, path by :func:`key_id` of the key;
        None where nothing was published."""
        version = self.current()
        manifest = self.manifest(version)
        if manifest is None:
            return None
        return {
            key_id(entry["key"]): os.path.join(version, entry["file"])
            for entry in manifest["models"]
            if entry.get("promoted")
        }

    def published_path(self, file: str) -> str:
        """The stable path of a published ``file``: through the pointer, so it names the
        current set's model (``models/income/bachelors-<hash>.skops``, or the SAVE TO path
        itself without PER); the same for every run, as tests and reports want it."""
        return os.path.join(self.pointer, file) if self.per else self.pointer

    def versions(self) -> list[str]:
        """Every published version folder, oldest first."""
        try:
            names = os.listdir(self.versions_dir)
        except FileNotFoundError:
            return []
        found = sorted((int(m.group(1)), n) for n in names if (m := _VERSION.match(n)))
        return [os.path.join(self.versions_dir, n) for _, n in found]

    # ------------------------------------------------------------ writing

    def check_writable(self) -> None:
        """Refuses, before any training, a store that cannot be published to."""
        if os.path.lexists(self.pointer) and not os.path.islink(self.pointer):
            raise ModelStoreError(
                f"'{self.pointer}' exists and is not a beam_dsl model store (a symlink to a "
                "published version); move it away or save elsewhere"
            )
        try:
            os.makedirs(self.versions_dir, exist_ok=True)
            probe = os.path.join(self.versions_dir, f".probe-{uuid.uuid4().hex}")
            with open(probe, "w"):
                pass
            os.unlink(probe)
        except OSError as e:
            raise ModelStoreError(f"cannot write models under '{self.versions_dir}': {e}") from e

    def begin(self, run: str) -> str:
        """Starts run ``run``: removes what dead runs left, locks and returns its staging folder.

        Call in the process that lives as long as the run (the one that builds
        the pipeline): the lock is released when that process ends, however
        it ends, which is how a later run knows the staging folder is dead.
        """
        self.check_writable()
        self.clean_dead_runs()
        lock_path = self.staging(run) + ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX)
        _HELD[lock_path] = fd
        os.makedirs(self.staging(run), exist_ok=True)
        _crash_point("begin")
        return self.staging(run)

    def staged_file(self, run: str, key: Sequence[Any] | None) -> str:
        """Where run ``run`` writes the model of ``key`` (relative to the version folder)."""
        if not self.per:
            return self._rest
        return self._rest.replace("{key}", key_name(key))

    def save(self, model: Any, run: str, key: Sequence[Any] | None) -> tuple[str, str]:
        """Writes ``key``'s model into the run's staging folder; returns (file, sha256)."""
        return self.write(dump_model(model, self.staged_file(run, key)), run, key)

    def write(self, data: bytes, run: str, key: Sequence[Any] | None) -> tuple[str, str]:
        """Writes ``key``'s model, as :func:`dump_model` made it, into the run's staging
        folder; returns (file, sha256). (TRAIN's worker processes fit and dump models; the
        run's own process writes them, so the crash points count its saves.)"""
        relative = self.staged_file(run, key)
        digest = write_model(data, os.path.join(self.staging(run), relative))
        with _SAVED_LOCK:
            _SAVED[0] += 1
            saved = _SAVED[0]
        _crash_point(f"saved:{saved}")
        return relative, digest

    def publish(self, run: str, manifest: dict[str, Any]) -> str:
        """Makes run ``run``'s models the current set, in one atomic step; returns its folder."""
        staging = self.staging(run)
        # A runner that computes a stage more than once publishes more than once: the
        # later calls find the run published already.
        for version in reversed(self.versions()):
            if (self.manifest(version) or {}).get("run") == run:
                shutil.rmtree(staging, ignore_errors=True)
                return version
        if not os.path.isdir(staging):
            raise ModelStoreError(f"run {run} has no staging folder under '{self.versions_dir}'")
        manifest = {"version": MANIFEST_VERSION, "run": run, **manifest}
        text = json.dumps(manifest, indent=2, sort_keys=True)
        _atomic_write(os.path.join(staging, MANIFEST), lambda f: f.write(text.encode() + b"\n"))
        _fsync_dir(staging)
        with self._publish_lock():
            versions = self.versions()
            last = _VERSION.match(os.path.basename(versions[-1])).group(1) if versions else 0
            version = os.path.join(self.versions_dir, f"v{int(last) + 1:06d}")
            os.rename(staging, version)
            _fsync_dir(self.versions_dir)
            _crash_point("before_swap")
            self._point_at(version)
            _crash_point("after_swap")
            self._prune()
        self._release(run)
        return version

    def clean_dead_runs(self) -> None:
        """Removes the staging folders of runs whose process is gone (their lock is free)."""
        try:
            names = os.listdir(self.versions_dir)
        except FileNotFoundError:
            return
        for name in names:
            if not name.startswith(".staging-"):
                continue
            lock_path = os.path.join(self.versions_dir, name.removesuffix(".lock") + ".lock")
            if lock_path in _HELD:
                continue
            if not os.path.exists(lock_path):  # a folder left after its run published
                shutil.rmtree(lock_path[: -len(".lock")], ignore_errors=True)
                continue
            fd = os.open(lock_path, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # a live run
            shutil.rmtree(lock_path[: -len(".lock")], ignore_errors=True)
            os.unlink(lock_path)
            os.close(fd)

    # ------------------------------------------------------------ internals

    def staging(self, run: str) -> str:
        """The staging folder of run ``run``."""
        if not re.fullmatch(r"[A-Za-z0-9_-]+", run):
            raise ModelStoreError(f"bad run id {run!r}")
        return os.path.join(self.versions_dir, f".staging-{run}")

    def _release(self, run: str) -> None:
        lock_path = self.staging(run) + ".lock"
        fd = _HELD.pop(lock_path, None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        if fd is not None:
            os.close(fd)

    @contextlib.contextmanager
    def _publish_lock(self) -> Iterator[None]:
        fd = os.open(os.path.join(self.versions_dir, ".publish.lock"), os.O_RDWR | os.O_CREAT,
                     0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _point_at(self, version: str) -> None:
        """Swaps the pointer symlink to ``version`` with one rename (atomic on POSIX)."""
        target = os.path.join(version, self._rest) if not self.per else version
        relative = os.path.relpath(target, os.path.dirname(self.pointer) or ".")
        tmp = f"{self.pointer}.tmp-{uuid.uuid4().hex}"
        os.symlink(relative, tmp)
        os.replace(tmp, self.pointer)
        _fsync_dir(os.path.dirname(self.pointer) or ".")

    def _prune(self) -> None:
        current = self.current()
        for old in self.versions()[:-KEEP_VERSIONS]:
            if os.path.realpath(old) != os.path.realpath(current or ""):
                shutil.rmtree(old, ignore_errors=True)

    def roll_back(self, version: str) -> None:
        """Points at a kept version (its folder name, ``v000002``) again."""
        path = os.path.join(self.versions_dir, os.path.basename(version))
        if path not in self.versions():
            raise ModelStoreError(f"'{version}' is not a kept version of '{self.pointer}'")
        with self._publish_lock():
            self._point_at(path)


# ---------------------------------------------------------------- files


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: str, write: Callable[[Any], Any]) -> None:
    """Writes through ``write(file)`` to a temporary name, fsyncs, then renames, so readers
    never see half a file. The file gets the user's normal mode (umask)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_model(model: Any, path: str) -> str:
    """Writes ``model`` atomically in the format the suffix names; returns its sha256."""
    return write_model(dump_model(model, path), path)


def format_modules(path: str) -> tuple[str, ...]:
    """What reads and writes model files in ``path``'s format (:func:`dump_model`,
    :func:`load_model`): a workers' fork server preloads it."""
    if path.endswith(SKOPS_SUFFIXES):
        return ("beam_dsl.transforms.common.skops_io",)
    return ("joblib",) if path.endswith(PICKLE_SUFFIXES) else ()


def dump_model(model: Any, path: str) -> bytes:
    """The bytes of ``model`` in the format ``path``'s suffix names."""
    if path.endswith(SKOPS_SUFFIXES):
        from beam_dsl.transforms.common.skops_io import io as skops_io

        return skops_io.dumps(model)
    if path.endswith(".joblib"):
        import joblib

        buffer = io.BytesIO()
        joblib.dump(model, buffer)
        return buffer.getvalue()
    if path.endswith(PICKLE_SUFFIXES):  # plain pickle (joblib.load reads it too): 10x faster
        return pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    raise ModelStoreError(f"'{path}': unknown model format; use .skops (safe) or .pkl/.joblib")


def write_model(data: bytes, path: str) -> str:
    """Writes a model's bytes (:func:`dump_model`) to ``path`` atomically; returns their
    sha256."""
    _atomic_write(path, lambda f: f.write(data))
    return hashlib.sha256(data).hexdigest()


class UntrustedTypes(ModelStoreError):
    """A skops file holding types that are not trusted (``types``)."""

    def __init__(self, path: str, types: Sequence[str]):
        self.types = list(types)
        super().__init__(f"'{path}' holds types that are not trusted: {', '.join(self.types)}")


def load_model(path: str, allow_pickle: bool = False, trusted: Sequence[str] = ()) -> Any:
    """Loads a model file.

    skops files load trusting skops' default types and ``trusted`` (a MODEL's
    TRUST and the types beam_dsl vouches for, :func:`vouched_types`), and
    nothing else: no file beside the model (a manifest) widens trust, so
    writing to the model folder never makes code run. Pickle and joblib files
    can run arbitrary code when loaded, so they need ``allow_pickle=True``.
    """
    if not os.path.exists(path):
        raise ModelStoreError(f"model file '{path}' does not exist")
    if path.endswith(SKOPS_SUFFIXES):
        from beam_dsl.transforms.common.skops_io import io as skops_io

        allowed = list(trusted)
        untrusted = [t for t in skops_io.get_untrusted_types(file=path) if t not in allowed]
        if untrusted:
            raise UntrustedTypes(path, untrusted)
        return skops_io.load(path, trusted=allowed or None)
    if path.endswith(PICKLE_SUFFIXES):
        if not allow_pickle:
            raise ModelStoreError(
                f"'{path}' is a pickle file, which can run code when loaded; "
                "pass allow_pickle to load it, or save models as .skops"
            )
        import joblib

        return joblib.load(path)
    raise ModelStoreError(f"'{path}': unknown model format")
