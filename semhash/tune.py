"""Hyperparameter search for any model kind by k-fold cross-validated retrieval quality.

For every candidate setting, the labelled images are split into ``folds`` stratified folds;
for each fold a fresh model is fitted on the other folds, and the held-out fold's images
query the training folds' images (both hashed by the model's exported NumPy Hasher).  The
score is a retrieval metric of that query/database search ("map": mean average precision
of the Hamming ranking; "precision_r2": precision within Hamming radius 2, queries with no
neighbour counting 0), averaged over the folds.

    from semhash.tune import tune, parse_param_grid, write_best_config
    grid = parse_param_grid(["noise=2,4,8", "learning_rate=0.001,0.0003"])
    result = tune("autoencoder", images, labels, grid, folds=3, metric="map")
    result.best_params                  # base params + the winning combination
    write_best_config(result, "best.json")   # read by `semhash train --config best.json`

The search is a full grid, or ``n_iter`` combinations drawn from it without replacement
(seeded).  Nothing here imports TensorFlow; TensorFlow kinds import it when they fit.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from semhash.evaluate import jsonable

from semhash.errors import ModelError, SemhashError

METRICS = {
    "map": "mean average precision of the Hamming ranking",
    "precision_r2": "precision within Hamming radius 2 (queries with no neighbour count 0)",
}

__all__ = [
    "METRICS",
    "ConfigError",
    "TuneError",
    "Trial",
    "TuneResult",
    "tune",
    "parameter_candidates",
    "parse_param_grid",
    "parse_value",
    "write_best_config",
    "load_config",
    "score_codes",
    "subsample",
    "format_value",
    "format_duration",
    "release_backend",
]


class TuneError(SemhashError):
    """A tuning request that cannot run: bad grid, bad metric, no labels, ..."""


class ConfigError(SemhashError):
    """A best-parameters config file that cannot be read or does not fit its kind."""


# --------------------------------------------------------------------------- results
@dataclass
class Trial:
    """One candidate setting, scored on every fold.

    Unpacks as ``params, mean, std, fold_scores, seconds``.  ``error`` is set (and the
    scores are nan) when fitting this setting failed; such trials rank last.
    """

    params: dict[str, Any]
    mean: float
    std: float
    fold_scores: list[float]
    seconds: float
    error: str | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.params, self.mean, self.std, self.fold_scores, self.seconds))

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": jsonable(self.params),
            "mean": _finite(self.mean),
            "std": _finite(self.std),
            "fold_scores": [_finite(s) for s in self.fold_scores],
            "seconds": round(float(self.seconds), 3),
            "error": self.error,
        }


@dataclass
class TuneResult:
    """Trials ranked best first (higher score is better; failed trials last)."""

    kind: str
    metric: str
    folds: int
    trials: list[Trial]
    base_params: dict[str, Any] = field(default_factory=dict)
    n_images: int = 0
    seed: int = 0
    seconds: float = 0.0
    auto_params: tuple[str, ...] = ()  # filled in from the data (input_shape), not chosen
    settings: int = 0  # candidate settings in the search (more than len(trials) when interrupted)
    interrupted: bool = False  # Ctrl-C: the trials hold what was measured until then

    # sequence behaviour: result[0] is the best trial
    def __iter__(self) -> Iterator[Trial]:
        return iter(self.trials)

    def __len__(self) -> int:
        return len(self.trials)

    def __getitem__(self, i: int) -> Trial:
        return self.trials[i]

    @property
    def best(self) -> Trial:
        if not self.trials or self.trials[0].error is not None:
            raise TuneError("no tuning trial succeeded")
        return self.trials[0]

    @property
    def best_params(self) -> dict[str, Any]:
        """Every parameter to train the winner with: base params + the best combination
        (without ``input_shape`` when it was only taken from the data)."""
        params = {**self.base_params, **self.best.params}
        for name in self.auto_params:
            params.pop(name, None)
        return params

    @property
    def best_score(self) -> float:
        return self.best.mean

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "metric": self.metric,
            "folds": self.folds,
            "n_images": self.n_images,
            "seed": self.seed,
            "seconds": round(float(self.seconds), 3),
            "settings": self.settings,
            "interrupted": self.interrupted,
            "base_params": jsonable({k: v for k, v in self.base_params.items() if k not in self.auto_params}),
            "best_params": jsonable(self.best_params) if self.trials and self.trials[0].error is None else None,
            "trials": [dict(rank=i + 1, **t.to_dict()) for i, t in enumerate(self.trials)],
        }


# --------------------------------------------------------------------------- scoring
def score_codes(metric: str, query_codes, query_labels, db_codes, db_labels, n_bits: int) -> float:
    """One retrieval score of a query/database search (see :data:`METRICS`)."""
    from semhash import metrics as m

    if metric == "map":
        return float(m.mean_average_precision(query_codes, query_labels, db_codes, db_labels, n_bits))
    if metric == "precision_r2":
        stats = m.neighbourhood_stats(query_codes, query_labels, db_codes, db_labels, 2)
        return float(stats["precision_all"])
    raise TuneError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")


# --------------------------------------------------------------------------- search space
def parameter_candidates(param_grid: dict[str, Sequence[Any]], n_iter: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Every combination of the grid (in order), or ``n_iter`` of them drawn without
    replacement (seeded; all of them when the grid is not larger than ``n_iter``)."""
    names = list(param_grid)
    values = []
    for name in names:
        vals = param_grid[name]
        if isinstance(vals, (str, bytes)) or not isinstance(vals, Sequence):
            vals = [vals]
        vals = list(vals)
        if not vals:
            raise TuneError(f"parameter {name!r} has no values to try")
        values.append(vals)
    combos = [dict(zip(names, combo)) for combo in itertools.product(*values)]
    if n_iter is not None:
        if int(n_iter) < 1:
            raise TuneError(f"n_iter must be >= 1, got {n_iter}")
        if n_iter < len(combos):
            rng = np.random.default_rng(seed)
            picked = sorted(rng.choice(len(combos), size=int(n_iter), replace=False))
            combos = [combos[i] for i in picked]
    return combos


def subsample(images: np.ndarray, labels: np.ndarray | None, n: int, seed: int = 0):
    """A seeded, label-stratified subset of ``n`` rows (everything when ``n >= len``)."""
    if n is None or n >= len(images):
        return images, labels
    if n < 2:
        raise TuneError(f"limit must be >= 2, got {n}")
    rng = np.random.default_rng(seed)
    if labels is None:
        rows = np.sort(rng.choice(len(images), size=int(n), replace=False))
        return images[rows], None
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts / counts.sum() * n).astype(int)
    # hand the remainder to the classes with the largest fractional share
    remainder = int(n) - int(quota.sum())
    order = np.argsort(-(counts / counts.sum() * n - quota), kind="stable")
    quota[order[:remainder]] += 1
    rows = np.concatenate([
        rng.choice(np.flatnonzero(labels == c), size=int(q), replace=False) for c, q in zip(classes, quota)
    ])
    rows = np.sort(rows)
    return images[rows], labels[rows]


def _fold_indices(labels: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import KFold, StratifiedKFold

    _, counts = np.unique(labels, return_counts=True)
    if counts.min() >= folds:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(len(labels)), labels))
    splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels))))


# --------------------------------------------------------------------------- the search
def tune(
    kind: str,
    images: np.ndarray,
    labels: np.ndarray,
    param_grid: dict[str, Sequence[Any]],
    *,
    folds: int = 3,
    n_iter: int | None = None,
    metric: str = "map",
    seed: int = 0,
    base_params: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    workspace=None,
    class_names: list[str] | None = None,
) -> TuneResult:
    """Cross-validate every candidate setting of ``kind``; returns trials ranked best first.

    ``param_grid`` maps hyperparameter names to lists of values; ``base_params`` are fixed
    for every trial (the grid wins where both name a parameter).  ``input_shape`` is taken
    from ``images`` unless given.  ``labels`` are required (relevant = same label).
    ``workspace`` and ``class_names`` are passed to each fit (kinds that reuse another
    trained model, e.g. pretrained-classifier, find it in the workspace).  A setting whose
    fit fails with a library error or ValueError is recorded with its error and ranked
    last; if every setting fails, TuneError is raised.
    """
    from semhash.models import build_model, get_kind
    from semhash.models.base import FitContext

    log = log or (lambda message: None)
    if metric not in METRICS:
        raise TuneError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")
    cls = get_kind(kind)
    images = np.asarray(images)
    if labels is None:
        raise TuneError("tuning needs labelled images: relevance is 'same label' (give a built-in dataset or a folder with one subfolder per label)")
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(images):
        raise TuneError(f"{len(images)} images but {len(labels)} labels")
    folds = int(folds)
    if folds < 2:
        raise TuneError(f"folds must be >= 2, got {folds}")
    if len(images) < 2 * folds:
        raise TuneError(f"{len(images)} images are too few for {folds} folds")
    if len(np.unique(labels)) < 2:
        raise TuneError("tuning needs at least two distinct labels")

    param_grid = dict(param_grid or {})
    base = dict(base_params or {})
    accepted = set(cls.param_names())
    unknown = sorted((set(param_grid) | set(base)) - accepted)
    if unknown:
        raise TuneError(
            f"parameter(s) {', '.join(unknown)} do not apply to model kind {kind!r} "
            f"(it takes: {', '.join(sorted(accepted))})"
        )
    auto: tuple[str, ...] = ()
    if "input_shape" in accepted and "input_shape" not in base and "input_shape" not in param_grid:
        base["input_shape"] = tuple(int(s) for s in images.shape[1:])
        auto = ("input_shape",)

    candidates = parameter_candidates(param_grid, n_iter, seed)
    splits = _fold_indices(labels, folds, seed)
    fits = len(candidates) * folds
    log(
        f"tuning {kind}: {len(candidates)} setting(s) x {folds} folds = {fits} fits on {len(images)} images, "
        f"metric {metric} (Ctrl-C stops and keeps what was measured)"
    )
    started = time.time()
    trials: list[Trial] = []
    interrupted = False
    t, combo, scores, trial_started = 0, {}, [], started
    try:
        for t, combo in enumerate(candidates, 1):
            params = {**base, **combo}
            shown = _describe(combo) or "(base parameters)"
            scores = []
            trial_started = time.time()
            error = None
            for f, (train_idx, held_idx) in enumerate(splits, 1):
                fold_started = time.time()
                try:
                    model = build_model(kind, params)
                    context = FitContext(workspace=workspace, verbose=0, class_names=class_names, log=lambda m: None)
                    model.fit(images[train_idx], labels[train_idx], context=context)
                    hasher = model.export_hasher()
                    db_codes = hasher.hash(images[train_idx])
                    q_codes = hasher.hash(images[held_idx])
                except (SemhashError, ValueError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    log(f"[{t}/{len(candidates)}] {shown}: fold {f}/{folds} failed: {error}")
                    break
                finally:
                    model = None
                    release_backend()
                score = score_codes(metric, q_codes, labels[held_idx], db_codes, labels[train_idx], hasher.n_bits)
                scores.append(score)
                fold_seconds = time.time() - fold_started
                log(f"[{t}/{len(candidates)}] {shown}: fold {f}/{folds} {metric}={score:.4f} ({fold_seconds:.1f} s)")
                if t == 1 and f == 1 and fits > 1:
                    log(f"estimate from the first fold: about {format_duration(fold_seconds * fits)} for all {fits} fits")
            seconds = time.time() - trial_started
            if error is None:
                arr = np.asarray(scores, dtype=np.float64)
                trials.append(Trial(combo, float(np.mean(arr)), float(np.std(arr)), scores, seconds))
                log(f"[{t}/{len(candidates)}] {shown}: {metric} {np.mean(arr):.4f} +- {np.std(arr):.4f}")
            else:
                trials.append(Trial(combo, math.nan, math.nan, scores, seconds, error))
    except KeyboardInterrupt:
        if not any(tr.error is None for tr in trials):
            raise  # nothing was measured in full: an ordinary Ctrl-C
        interrupted = True
        if t and len(trials) < t and scores:  # the setting being fitted: its finished folds are kept, unranked
            done = f"interrupted after {len(scores)} of {folds} folds"
            trials.append(Trial(combo, math.nan, math.nan, scores, time.time() - trial_started, done))
        log(f"interrupted: {sum(tr.error is None for tr in trials)} of {len(candidates)} settings measured in full")

    ok = [tr for tr in trials if tr.error is None and not math.isnan(tr.mean)]
    if not ok:
        first = next((tr.error for tr in trials if tr.error), "no score")
        raise TuneError(f"every tuning setting failed; the first: {first}")
    # stable sort: ties keep grid order; failed / nan trials last
    ranked = sorted(trials, key=lambda tr: (tr.error is not None or math.isnan(tr.mean), -(0.0 if math.isnan(tr.mean) else tr.mean)))
    return TuneResult(
        kind=kind,
        metric=metric,
        folds=folds,
        trials=ranked,
        base_params=base,
        n_images=int(len(images)),
        seed=int(seed),
        seconds=time.time() - started,
        auto_params=auto,
        settings=len(candidates),
        interrupted=interrupted,
    )


def format_duration(seconds: float) -> str:
    """``42 s``, ``7 min``, ``2.5 h``: how long, for a person."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def release_backend() -> None:
    """Free the graphs and models of finished fits when Keras is in use (many fits in one
    process otherwise grow memory and retrace); never imports Keras itself."""
    import sys

    keras = sys.modules.get("keras")
    if keras is not None:
        try:
            keras.backend.clear_session()
        except Exception:  # pragma: no cover - best effort only
            pass


def _describe(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={format_value(v)}" for k, v in params.items())


def format_value(value: Any) -> str:
    """Inverse of :func:`parse_value` for display: (500, 300) -> '500x300'."""
    if isinstance(value, (tuple, list)):
        return "x".join(format_value(v) for v in value) + ("x" if len(value) == 1 else "")
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    return str(value)


# --------------------------------------------------------------------------- CLI grids
def parse_value(text: str) -> Any:
    """One value as written on the command line.

    ``true``/``false``/``yes``/``no`` -> bool, ``none``/``null`` -> None, ``8`` -> int,
    ``0.001``/``1e-3`` -> float, ``500x300`` -> (500, 300) (and ``500x`` -> (500,)),
    anything else -> the string itself.
    """
    text = text.strip()
    lowered = text.lower()
    if lowered in ("true", "yes"):
        return True
    if lowered in ("false", "no"):
        return False
    if lowered in ("none", "null"):
        return None
    if "x" in lowered:
        parts = lowered.split("x")
        if parts[-1] == "" and len(parts) == 2:
            parts = parts[:1]
        numbers = [_number(p) for p in parts]
        if parts and all(n is not None for n in numbers):
            return tuple(numbers)
    number = _number(text)
    return text if number is None else number


def _number(text: str):
    text = text.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_param_grid(items: Sequence[str], kind: str | None = None) -> dict[str, list[Any]]:
    """``["noise=2,4,8", "learning-rate=0.001,0.0003", "hidden=500x300,256x128"]`` ->
    ``{"noise": [2, 4, 8], "learning_rate": [0.001, 0.0003], "hidden": [(500, 300), (256, 128)]}``.

    Names may use ``-`` or ``_``; values are comma-separated and converted by
    :func:`parse_value`; a name given twice accumulates its values.  With ``kind``, names
    are checked against the kind's parameters, and a single number given for a parameter
    whose default is a sequence (``hidden=256``) becomes a 1-tuple.
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise TuneError(f"{item!r}: a parameter is NAME=VALUE[,VALUE...], e.g. noise=2,4,8")
        name, _, values = item.partition("=")
        name = name.strip().replace("-", "_")
        if not name.isidentifier():
            raise TuneError(f"{item!r}: {name!r} is not a parameter name")
        pieces = [v for v in values.split(",")]
        if not values.strip() or any(not v.strip() for v in pieces):
            raise TuneError(f"{item!r}: empty value (use NAME=V1,V2,...)")
        grid.setdefault(name, []).extend(parse_value(v) for v in pieces)
    if kind is not None:
        grid = _coerce_for_kind(grid, kind)
    return grid


def _coerce_for_kind(grid: dict[str, list[Any]], kind: str) -> dict[str, list[Any]]:
    import inspect

    from semhash.models import get_kind

    cls = get_kind(kind)
    signature = inspect.signature(cls.__init__)
    accepted = [p for p in signature.parameters if p != "self"]
    unknown = sorted(set(grid) - set(accepted))
    if unknown:
        raise TuneError(
            f"parameter(s) {', '.join(unknown)} do not apply to model kind {kind!r} "
            f"(it takes: {', '.join(sorted(accepted))})"
        )
    out = {}
    for name, values in grid.items():
        default = signature.parameters[name].default
        if isinstance(default, (tuple, list)):
            values = [(v,) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in values]
        out[name] = values
    return out


# --------------------------------------------------------------------------- configs
def write_best_config(result: TuneResult, path: str | Path) -> Path:
    """Write ``{"kind", "params", "metric", "score", ...}`` for ``semhash train --config``."""
    best = result.best
    config = {
        "kind": result.kind,
        "params": jsonable(result.best_params),
        "metric": result.metric,
        "score": _finite(best.mean),
        "std": _finite(best.std),
        "fold_scores": [_finite(s) for s in best.fold_scores],
        "folds": result.folds,
        "n_images": result.n_images,
        "created_by": "semhash tune",
    }
    if result.interrupted:  # the best of the settings measured before Ctrl-C
        config["interrupted"] = {"settings_measured": sum(t.error is None for t in result), "settings": result.settings}
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def load_config(path: str | Path) -> tuple[str, dict[str, Any]]:
    """Read a config written by :func:`write_best_config` (or by hand) -> ``(kind, params)``.

    Checks that the kind exists and takes every parameter; JSON lists become tuples
    (``hidden``, ``input_shape``).  Raises :class:`ConfigError` naming the file and the
    problem.
    """
    from semhash.models import get_kind

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    shape = '{"kind": "<model kind>", "params": {"<name>": <value>, ...}}'
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config is a JSON object {shape}")
    kind = data.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ConfigError(f'{path}: missing "kind" (a config is {shape})')
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(f'{path}: "params" must be an object of name: value (a config is {shape})')
    try:
        cls = get_kind(kind)
    except ModelError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    accepted = set(cls.param_names())
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ConfigError(
            f"{path}: parameter(s) {', '.join(unknown)} do not apply to model kind {kind!r} "
            f"(it takes: {', '.join(sorted(accepted))})"
        )
    return kind, {name: _untuple(value) for name, value in params.items()}


def _untuple(value):
    if isinstance(value, list):
        return tuple(_untuple(v) for v in value)
    return value


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
