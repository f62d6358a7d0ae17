"""The smaller sections of a sweep file: heartbeat, storage_retry, training, pack, keep, confirm, source.

Each is a frozen pydantic model that :class:`mnist_sweep.sweep.config.SweepConfig` holds under its key;
they live here so the sweep's own module stays about the sweep.

Example:
    >>> StorageRetryConfig().seconds
    120.0
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from mnist_sweep.sweep.space import Frozen

__all__ = ["ConfirmConfig", "HeartbeatConfig", "KeepConfig", "PackConfig", "Provenance", "StorageRetryConfig",
           "TrainingConfig"]


class HeartbeatConfig(Frozen):
    """Optuna's heartbeat (RDB storages only): a dead worker's trial turns FAIL and is retried."""

    interval: int = Field(default=10, ge=1, le=3600, description="seconds between heartbeats")
    grace_period: int | None = Field(default=None, ge=2, le=86_400, description="default: 3 x interval")
    max_retries: int = Field(default=1, ge=0, description="re-runs of a config whose worker died")


class StorageRetryConfig(Frozen):
    """What a worker does when its storage stops answering mid-sweep (a restart, a failover, a blip)."""

    seconds: float = Field(default=120.0, ge=0, le=86_400, allow_inf_nan=False, description="keep retrying the "
                           "storage (with backoff) for this long before stopping with exit 75; the trial in flight "
                           "goes on training meanwhile; 0: stop at the first error")


class TrainingConfig(Frozen):
    """How trials train (not what): settings that change speed, not the model."""

    backend: Literal["auto", "tensorflow", "jax"] = Field(
        default="auto",
        description="Keras 3 backend; 'auto': $KERAS_BACKEND if set, else jax where installed "
        "(installed with mnist_sweep; about 2x faster per epoch on CPU), else tensorflow",
    )
    steps_per_execution: int = Field(
        default=32, ge=1, le=10000, description="batches per compiled call: fewer Python round trips per epoch"
    )
    measure_latency: bool = Field(
        default=True, description="record each COMPLETE trial's inference latency (batch 1) and throughput "
        "(batch 1024) on this machine; about a second per trial")


class PackConfig(Frozen):
    """Packed trials: trials of one model structure trained together as one compiled program."""

    #: What ``members: auto`` means on an accelerator (on a CPU it means 1): docs/decisions.md says why.
    ACCELERATOR_MEMBERS: ClassVar[int] = 8

    members: Annotated[int, Field(ge=1, le=1024)] | Literal["auto"] = Field(
        default="auto", description="train up to K trials at once as one compiled program "
        "(jax.vmap over members) when their models share a structure (layers, widths, activation, batch norm, "
        "optimizer, batch size, epochs...); each stays an ordinary trial (reported, pruned and kept on its own). "
        "After a trial is sampled, K-1 more are sampled with its structure fixed (or taken from the sweep's "
        "enqueued trials). 1: one trial at a time (the `fit` path). 'auto': 8 on a GPU or TPU, 1 on a CPU "
        "(where packing pays only for small models); `run --pack K` overrides it")

    @field_validator("members", mode="before")
    @classmethod
    def _members(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1024):
            return value
        raise ValueError(f"want a whole number from 1 to 1024, or 'auto' (got {value!r})")

    def on_device(self, accelerator: bool) -> int:
        """The members per pack on a machine that trains on an ``accelerator`` (else on a CPU)."""
        if self.members == "auto":
            return self.ACCELERATOR_MEMBERS if accelerator else 1
        return self.members


class KeepConfig(Frozen):
    """Which trained models a study keeps (as Optuna artifacts), so none has to be retrained to be used."""

    models: int = Field(default=3, ge=0, le=1000, description="keep the models of the best K COMPLETE trials "
                        "by validation accuracy (the weights of each one's best epoch); 0 keeps none")
    pareto: bool = Field(default=True, description="also keep the models on the Pareto fronts of validation "
                         "accuracy against parameter count and against latency, so 'final --max-params' / "
                         "'--max-latency-ms' needs no retraining (only while models > 0)")


class ConfirmConfig(Frozen):
    """Winner confirmation: once the search ends, the best configs re-run with other seeds."""

    top: int = Field(default=0, ge=0, le=100, description="re-run the N best distinct configs once the search "
                     "has ended (0: none); export and final then rank them by their mean validation accuracy")
    seeds: int = Field(default=2, ge=1, le=100, description="extra runs of each, each with its own seed; they "
                       "count beyond 'trials' and run after 'timeout'")


class Provenance(Frozen):
    """Where an exported config came from."""

    study: str
    trial: int
    storage: str | None = None
    val_accuracy: float | None = None
    date: str | None = Field(default=None, description="when it was exported (ISO 8601, UTC)")
    provenance: dict[str, Any] | None = Field(
        default=None, description="the study's provenance: library versions, backend, data checksum, code "
        "version, machine (see mnist_sweep._base.provenance)")
