"""The final model as both ways to make it return it: :func:`~mnist_sweep.final.retrain.train_final`
(the best config retrained on all training data) and :func:`~mnist_sweep.final.ensemble.build_final`
(the study's best kept model, or an average of its best ones).

Example:
    >>> final = train_final(best_config(study))
    >>> final.test_accuracy, final.model_path, final.members
    (0.9803, PosixPath('studies/quick/model.keras'), [])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class FinalModel:
    """A final model, tested once, and the files it was written to.

    ``metrics`` is what ``metrics.json`` holds (test accuracy, parameters, seconds, provenance; a
    retrain's also its params, seed and per-epoch history). ``members`` are the trial numbers whose
    kept models it averages (one: that kept model alone); empty for a retrain. ``curves_path`` is a
    retrain's ``curves.html``.
    """

    model: Any  # the keras.Model, ready for predict()
    test_accuracy: float
    metrics: dict[str, Any]
    model_path: Path
    metrics_path: Path
    members: list[int] = field(default_factory=list)
    curves_path: Path | None = None

    @property
    def directory(self) -> Path:
        """The folder holding ``model.keras`` and ``metrics.json``."""
        return self.model_path.parent

    @property
    def test_loss(self) -> float | None:
        """The test loss (a retrain measures it; the kept models' choice does not)."""
        loss = self.metrics.get("test_loss")
        return None if loss is None else float(loss)

    @property
    def seconds(self) -> float:
        """How long making it took: a retrain's training, or the choice among the kept models."""
        return float(self.metrics["seconds"])
