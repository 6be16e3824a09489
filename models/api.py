"""The Model protocol: what the trainable (and ``hpsearch train``) drive.

A model is made by a *factory*: ``Factory(params, device, seed) -> Model``, where ``params`` is
the flat config mapping (data settings and hyperparameters), ``device`` a ``torch.device`` and
``seed`` an int that fixes everything random (data, init, shuffling). Same params + same seed on
the same device => the same metrics, epoch for epoch.

A model offers:

- ``train_epoch() -> dict[str, float]``: one pass over the training data. Keys: ``train_loss``
  (the weighted total), ``train_loss_<component>`` for every loss component, ``train_grad_norm``,
  ``train_batch_loss_std`` (spread of per-batch losses; 0 means a constant loss) and any
  model-specific diagnostics. Values are Python floats, never tensors.
- ``evaluate(split="val") -> dict[str, float]``: ``val_*`` metrics (for ``split="test"`` the keys
  start with ``test_``), including the objective.
- ``state_dict()`` / ``load_state_dict(state)``: everything needed to continue training exactly
  (weights, optimiser, epoch counter, RNG state), as tensors and plain Python values only, so that
  ``torch.load(..., weights_only=True)`` can read it back.

A factory may also declare, as class attributes (built-in models do; all are optional):

- ``Config``: a dataclass parsed by :func:`hpsearch.models.config.parse`, so bad params fail before any
  training or Ray process starts;
- ``objective``: the default ``(metric, mode)``;
- ``reported``: every metric name ``train_epoch``/``evaluate`` report, so an objective the model
  never reports is refused up front;
- ``collapse``: degeneracy metrics and their floors (e.g. ``{"train_emb_std": 1e-3}``), read by
  the ``collapsed`` health rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # torch is imported by the models themselves, not by this contract.
    import torch


@runtime_checkable
class Model(Protocol):
    def train_epoch(self) -> dict[str, float]: ...

    def evaluate(self, split: str = "val") -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class Factory(Protocol):
    def __call__(self, params: Mapping[str, Any], device: "torch.device", seed: int) -> Model: ...
