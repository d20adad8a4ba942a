"""Served rankers compiled to machine code (lleaves): the same scores, several times faster.

LightGBM scores a row by walking each tree in generic code: about 6 us per row for the
recommender's ranker on the 1M-event shop (174 trees, 74 features), which made the
re-rank the largest part of a served recommendation. lleaves compiles the model text, each
tree into branches, with LLVM (llvmlite brings its own LLVM: no C compiler is needed); on
the same rows it scores about 7x faster (docs/benchmarks.md, "Serving").

:func:`compile_booster` compiles a booster into a folder, checks the compiled model against
LightGBM on probe rows (finite, zero, negative, missing values) and only then registers it:
from then on :func:`pipelines.ranking.lambdamart.predict` uses it for that booster. A model
that fails to compile or to agree stays on LightGBM, and the caller hears why. Training,
evaluation and the SHAP reasons always use LightGBM.
"""

from __future__ import annotations

import shutil
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np

# booster -> its compiled model (held weakly: a booster that is dropped takes it along)
_COMPILED: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
TOLERANCE = 1e-6  # largest difference to LightGBM's score accepted on the probe rows


class CompileError(Exception):
    """The booster could not be compiled, or the compiled model scores differently."""


def _probe(n_features: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 3, size=(256, n_features))
    x[::7] = np.round(x[::7])  # integer values (categorical features, counts)
    x[1::5] = np.abs(x[1::5]) * 50  # large values
    x[2::9] = 0.0
    x[rng.random(x.shape) < 0.1] = np.nan  # missing values
    return x


def compile_booster(booster: Any, folder: Path) -> float:
    """Compile ``booster`` into ``folder`` (the model text and the shared object), check
    it scores as LightGBM does and register it; returns the seconds it took. Raises
    :class:`CompileError` (and registers nothing) otherwise."""
    started = time.perf_counter()
    try:
        import lleaves

        # lleaves loads a shared object it finds at the cache path instead of compiling:
        # only one compiled here, now, may be loaded (never a file that came with a bundle)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        text = folder / "ranker.txt"
        booster.save_model(str(text))
        model = lleaves.Model(model_file=str(text))
        model.compile(cache=str(folder / "ranker.so"))
        probe = _probe(booster.num_feature())
        want = np.asarray(booster.predict(probe, num_threads=1), dtype=np.float64)
        got = np.asarray(model.predict(probe, n_jobs=1), dtype=np.float64)
    except Exception as exc:  # lleaves or LLVM failing on a model: stay on LightGBM
        raise CompileError(f"the ranker does not compile: {type(exc).__name__}: {exc}") from exc
    worst = float(np.max(np.abs(got - want))) if len(want) else 0.0
    if got.shape != want.shape or not worst <= TOLERANCE:
        raise CompileError(f"the compiled ranker scores differently (by up to {worst:.3g})")
    _COMPILED[booster] = model
    return time.perf_counter() - started


def compiled(booster: Any) -> Any | None:
    """The compiled model registered for ``booster``, or None."""
    try:
        return _COMPILED.get(booster)
    except TypeError:  # not weak-referenceable (a test double): never compiled
        return None
