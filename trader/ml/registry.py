"""The model registry: versioned artifacts, each vouched for by a JSON manifest.

A registry is a directory::

    models/
      sma-daily-v1.joblib   the fitted estimator (joblib pickle)
      sma-daily-v1.json     its manifest
      sma-daily-v2.joblib
      sma-daily-v2.json
      sma-daily.champion.json   which version serves ``[scorer] model = "models/sma-daily"``

The manifest records what the model is and how it was made: its id, the
feature list and order, the training window, the data's hash, the labeling
and validation settings, the per-fold metrics, the library versions, and the
**sha256 of the artifact**. :func:`load` refuses (with
:class:`~trader.errors.ModelIntegrityError`) an artifact whose hash differs
from its manifest or a manifest whose feature list is not
:data:`~trader.ml.features.FEATURE_NAMES`: a model silently fed columns in
another order would score garbage with full confidence.

The hash is an integrity check, not authentication: unpickling runs code, so
load only models from a directory you control. Versions are allocated by
linking the artifact to a name that must not exist yet, and the manifest is
written last (atomically), so a reader never sees a manifest without its
artifact, and two trainers never share a version.

The champion pointer is replaced atomically (:func:`promote`), so a scorer
polling it sees the old champion or the new one. Which challenger becomes
champion is decided in :mod:`trader.ml.champion`.

This module does no training (see :mod:`trader.ml.train`).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import platform
import re
import tempfile
from pathlib import Path
from typing import Any, Final

import msgspec
import structlog

from trader import __version__
from trader.errors import ModelIntegrityError
from trader.ml.drift import DriftReference
from trader.ml.features import FEATURE_NAMES

log = structlog.get_logger("trader.ml.registry")

MANIFEST_FORMAT: Final = 1
_NAME_OK = re.compile(r"[^A-Za-z0-9._-]+")


class TrainingWindow(msgspec.Struct, frozen=True, kw_only=True):
    """The labeled signals a model learned from: first and last signal (UTC, ISO)."""

    start: str
    end: str
    signals: int


class DataInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The bars behind the training set: where, which symbols, and their hash."""

    dir: str
    symbols: tuple[str, ...]
    hash: str


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a model's user must know about it, and the hash that ties it to its file.

    ``model_id``, ``version``, ``artifact`` and ``sha256`` are filled in by
    :func:`save`.
    """

    format: int = MANIFEST_FORMAT
    model_id: str = ""
    name: str
    version: int = 0
    artifact: str = ""
    sha256: str = ""
    estimator: str
    calibration: str
    features: tuple[str, ...]
    threshold: float
    strategy: dict[str, Any]
    training_window: TrainingWindow
    data: DataInfo
    labels: dict[str, Any]
    validation: dict[str, Any]
    metrics: dict[str, Any]
    libraries: dict[str, str]
    created_utc: str
    drift: DriftReference | None = None
    """The training window's distributions (trader.ml.drift). None in manifests
    written before drift monitoring: such a model loads and scores, unmonitored."""


class LoadedModel(msgspec.Struct, frozen=True, kw_only=True):
    """A verified model: the estimator and the manifest it matched."""

    model: Any
    manifest: Manifest
    path: str

    @property
    def model_id(self) -> str:
        return self.manifest.model_id


def library_versions() -> dict[str, str]:
    """The versions that shape a pickled model and its features."""
    import joblib  # type: ignore[import-untyped, unused-ignore]
    import numpy
    import sklearn

    return {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
        "joblib": joblib.__version__,
        "msgspec": msgspec.__version__,
        "trader": __version__,
    }


@functools.cache
def use_one_thread() -> None:
    """Run scikit-learn's OpenMP loops on one thread, for the rest of the process.

    The models are tiny (hundreds of rows to fit, a handful to score): thread
    start-up and spin-waiting cost more than they save, and on a busy 2-core
    box a 2-thread HistGradientBoosting fit took 15 s instead of 0.1 s, and a
    5-row prediction 120 ms instead of 1 ms. Once per process: threadpoolctl
    takes milliseconds per call.
    """
    import sklearn.ensemble  # noqa: F401  (loads the OpenMP runtime so the limit applies)
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    threadpool_limits(limits=1, user_api="openmp")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def safe_name(name: str) -> str:
    """The registry's spelling of a model name (what :func:`save` names the files by)."""
    return _NAME_OK.sub("-", name).strip("-.") or "model"


def _versions(root: Path, name: str) -> list[int]:
    pattern = re.compile(rf"{re.escape(name)}-v(\d+)\.(?:json|joblib)")
    return [int(m.group(1)) for p in root.iterdir() if (m := pattern.fullmatch(p.name))]


def save(model: Any, manifest: Manifest, out_dir: str | Path) -> Path:
    """Write ``model`` as the next version of ``manifest.name`` under ``out_dir``.

    Returns:
        The path of the manifest written.

    Raises:
        OSError: the directory or files cannot be written.
    """
    import joblib  # type: ignore[import-untyped, unused-ignore]

    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = safe_name(manifest.name)
    buf = io.BytesIO()
    joblib.dump(model, buf)
    data = buf.getvalue()
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".tmp-", suffix=".joblib")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        version = max(_versions(root, name), default=0) + 1
        while True:
            artifact = root / f"{name}-v{version}.joblib"
            try:
                os.link(tmp, artifact)  # fails if another trainer took this version
                break
            except FileExistsError:
                version += 1
    finally:
        Path(tmp).unlink(missing_ok=True)
    final = msgspec.structs.replace(
        manifest, name=name, model_id=f"{name}-v{version}", version=version,
        artifact=artifact.name, sha256=_sha256(data), features=tuple(manifest.features),
    )
    path = root / f"{name}-v{version}.json"
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(msgspec.json.format(msgspec.json.encode(final), indent=2) + b"\n")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    log.info("model saved", model_id=final.model_id, manifest=str(path), sha256=final.sha256)
    return path


class Champion(msgspec.Struct, frozen=True, kw_only=True):
    """The champion pointer ``<name>.champion.json``: which version of a model serves.

    Written atomically by :func:`promote` (``trader train``'s champion/challenger
    decision, :mod:`trader.ml.champion`); read by :func:`resolve` and by the
    scorer, which swaps to a new champion while it runs.
    """

    model_id: str
    manifest: str
    """The champion's manifest, a file name in the same directory."""
    promoted_utc: str
    reason: str
    decision: dict[str, Any] = {}
    """The metrics the promotion was decided on (trader.ml.champion.Decision)."""


_VERSIONED = re.compile(r".+-v\d+")


def champion_ref(ref: str | Path) -> tuple[Path, str] | None:
    """``(registry dir, name)`` when ``ref`` names a model by name, not a version.

    ``models/sma-daily`` names whichever version is the champion;
    ``models/sma-daily-v3`` and ``models/sma-daily-v3.json`` name one version.
    """
    path = Path(ref)
    if not str(ref) or path.suffix == ".json" or _VERSIONED.fullmatch(path.name):
        return None
    return path.parent, path.name


def champion_path(root: str | Path, name: str) -> Path:
    return Path(root) / f"{name}.champion.json"


def read_champion(root: str | Path, name: str) -> Champion | None:
    """The champion pointer of ``name`` under ``root``, or None if none was promoted.

    Raises:
        ModelIntegrityError: the pointer exists but cannot be read or decoded.
    """
    path = champion_path(root, name)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ModelIntegrityError(f"{path}: cannot read champion pointer: {exc.strerror}") from None
    try:
        pointer = msgspec.json.decode(raw, type=Champion)
    except msgspec.DecodeError as exc:
        raise ModelIntegrityError(f"{path}: not a champion pointer: {exc}") from None
    if Path(pointer.manifest).name != pointer.manifest or not pointer.manifest:
        raise ModelIntegrityError(f"{path}: manifest {pointer.manifest!r} is not a file name")
    return pointer


def promote(root: str | Path, manifest: Manifest, *, reason: str,
            decision: dict[str, Any] | None = None, now_utc: str = "") -> Path:
    """Make ``manifest``'s model the champion of its name (atomic replace of the pointer).

    Returns:
        The pointer's path.
    """
    path = champion_path(root, manifest.name)
    pointer = Champion(model_id=manifest.model_id, manifest=f"{manifest.model_id}.json",
                       promoted_utc=now_utc, reason=reason, decision=decision or {})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(msgspec.json.format(msgspec.json.encode(pointer), indent=2) + b"\n")
        # A reader (the scorer polling) sees the old pointer or the new one, never half.
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    log.info("model promoted", model_id=manifest.model_id, pointer=str(path), reason=reason)
    return path


def resolve(ref: str | Path) -> Path:
    """The manifest a ``[scorer] model`` value names.

    A ``.json`` path or registry dir + id names that version; registry dir +
    name (no ``-vN``) names the name's current champion.

    Raises:
        ModelIntegrityError: a name whose champion pointer is missing or invalid.
    """
    path = Path(ref)
    if path.suffix == ".json":
        return path
    by_name = champion_ref(ref)
    if by_name is not None:
        root, name = by_name
        pointer = read_champion(root, name)
        if pointer is None:
            raise ModelIntegrityError(
                f"{champion_path(root, name)}: no champion promoted for model {name!r} "
                "(trader train promotes one)"
            )
        return root / pointer.manifest
    return path.with_name(path.name + ".json")


def read_manifest(path: str | Path) -> Manifest:
    """Read and decode a manifest without loading its model.

    Raises:
        ModelIntegrityError: missing, unreadable, or not a manifest.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ModelIntegrityError(f"{p}: model manifest not found") from None
    except OSError as exc:
        raise ModelIntegrityError(f"{p}: cannot read model manifest: {exc.strerror}") from None
    try:
        manifest = msgspec.json.decode(raw, type=Manifest)
    except msgspec.DecodeError as exc:
        raise ModelIntegrityError(f"{p}: not a model manifest: {exc}") from None
    if manifest.format != MANIFEST_FORMAT:
        raise ModelIntegrityError(
            f"{p}: manifest format {manifest.format}, this code reads {MANIFEST_FORMAT}"
        )
    return manifest


def _feature_mismatch(trained: tuple[str, ...]) -> str:
    here = FEATURE_NAMES
    missing = [f for f in here if f not in trained]
    extra = [f for f in trained if f not in here]
    if missing or extra:
        return f"missing {missing}, unknown {extra}"
    return "same features in another order"


def load(ref: str | Path) -> LoadedModel:
    """Load a model after checking it against its manifest.

    Args:
        ref: a manifest path or registry dir + model id (see :func:`resolve`).

    Raises:
        ModelIntegrityError: the manifest is missing or invalid; its feature
            list is not FEATURE_NAMES; the artifact is missing, its sha256
            differs from the manifest's, or it does not unpickle into a binary
            classifier over those features.
    """
    path = resolve(ref)
    manifest = read_manifest(path)
    if tuple(manifest.features) != FEATURE_NAMES:
        raise ModelIntegrityError(
            f"{path}: model {manifest.model_id} was trained on other features than this "
            f"code computes ({_feature_mismatch(tuple(manifest.features))}); retrain it"
        )
    if Path(manifest.artifact).name != manifest.artifact or not manifest.artifact:
        raise ModelIntegrityError(f"{path}: artifact {manifest.artifact!r} is not a file name")
    artifact = path.parent / manifest.artifact
    try:
        data = artifact.read_bytes()
    except OSError as exc:
        raise ModelIntegrityError(
            f"{artifact}: cannot read the artifact of {path}: {exc.strerror}"
        ) from None
    digest = _sha256(data)
    if digest != manifest.sha256:
        raise ModelIntegrityError(
            f"{artifact}: sha256 {digest} does not match its manifest {path} "
            f"({manifest.sha256}); refusing to load a changed artifact"
        )
    ours = library_versions()
    differ = {k: (v, ours.get(k)) for k, v in manifest.libraries.items() if ours.get(k) != v}
    if differ:
        log.warning("model trained with other library versions", model_id=manifest.model_id,
                    versions={k: f"{a} -> {b}" for k, (a, b) in differ.items()})
    import joblib  # type: ignore[import-untyped, unused-ignore]

    try:
        # From the bytes just hashed: the file may change after the check.
        model = joblib.load(io.BytesIO(data))
    except Exception as exc:  # unpickling can raise anything; ours names the file
        raise ModelIntegrityError(f"{artifact}: cannot unpickle the model: {exc!r}") from exc
    use_one_thread()
    classes = [int(c) for c in getattr(model, "classes_", [])]
    n_in = getattr(model, "n_features_in_", len(FEATURE_NAMES))
    if not hasattr(model, "predict_proba") or classes != [0, 1] or n_in != len(FEATURE_NAMES):
        raise ModelIntegrityError(
            f"{artifact}: not a binary classifier over {len(FEATURE_NAMES)} features "
            f"(classes {classes}, {n_in} inputs)"
        )
    return LoadedModel(model=model, manifest=manifest, path=str(path))
