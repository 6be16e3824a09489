"""Health verdicts on a trial's metric history (pure: no torch, no ray, no numpy).

``assess(history, config, collapse, objective=...)`` reads the per-epoch results of one trial and
says whether training is still worth running:

    ok         nothing wrong
    nonfinite  a reported loss (train_loss, train_loss_*, val_loss, val_loss_*) or the objective
               is NaN or +-inf
    exploding  train_loss far above its best, or more than doubling epoch after epoch, and more
               than twice where it started for two epochs (or after a three-epoch climb); or,
               after a 40x fall, doubling three epochs in a row back towards its start; a
               converged loss wiggling far below its start is ok, and so are a bump around an
               untrained start, a one-epoch jump that falls back and a trained loss bouncing back
               for two epochs
    collapsed  a degeneracy metric the model declares (e.g. train_emb_std) at its floor for a while
    flatline   train_loss that does not move, a whole epoch of identical batch losses, or no gradient

Every threshold is relative to the trial's own values (scale-free), so the same defaults serve a
loss of 0.1 and a loss of 300, and a loss that fell from 0.1 to 1e-5 and wiggles there. Each rule
is a small frozen dataclass: its constructor validates (one-line ConfigError naming field and
value) and its one method, ``check(history)``, returns the first epoch at which it fires.
``assess`` asks them in the order above and returns the earliest verdict; on a tie the order above
decides.

A key the model does not report disables only the sub-rule that reads it: that is spelled out in
each rule (``as_float(row.get(key)) is None``), never hidden in a broad ``except``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hpsearch.core.numbers import as_float, fmt
from hpsearch.models.config import ConfigError, bounds, check_bounds, coerce

STATUSES = ("ok", "nonfinite", "exploding", "flatline", "collapsed")

History = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class Verdict:
    status: str          # one of STATUSES
    reason: str = ""     # one line naming the metric, the values and the epoch; "" when ok
    epoch: int | None = None  # 1-based epoch at which the verdict fired (None when ok)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


OK = Verdict("ok")


def _validate(obj: Any, where: str) -> None:
    """Check every field of a settings dataclass against its type and bounds, and keep the value as
    its type (direct construction gets the same one-line errors and values as YAML parsing: "20"
    for a float field is 20.0, "0.5" where more than 1 is allowed is refused)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = coerce(getattr(obj, f.name), hints[f.name], f"{where}{f.name}")
        check_bounds(value, f.metadata, f"{where}{f.name}")
        object.__setattr__(obj, f.name, value)      # a frozen dataclass: its own value, converted


def _span(first: int, last: int) -> str:
    return f"epoch {last}" if first == last else f"epochs {first}-{last}"


@dataclass(frozen=True)
class NonfiniteRule:
    """Fires in the first epoch where a loss, the gradient norm or the objective is NaN or +-inf.

    Watched keys: ``train_loss``, ``train_loss_*``, ``val_loss``, ``val_loss_*`` and, when named,
    the objective. Not the gradient norm: mixed-precision training meets inf gradients by design
    and skips those steps; a NaN that reaches the weights shows in the loss an epoch later.
    NaN policy: this is the rule that owns NaN; a missing key (or a non-number) is not non-finite.
    """

    objective: str | None = None

    def watched(self, key: str) -> bool:
        return (key in ("train_loss", "val_loss", self.objective)
                or key.startswith(("train_loss_", "val_loss_")))

    def check(self, history: History) -> Verdict | None:
        for epoch, row in enumerate(history, 1):
            for key in sorted(row):
                if not self.watched(key):
                    continue
                value = as_float(row[key])
                if value is None or math.isfinite(value):
                    continue
                return Verdict("nonfinite", f"{key} is {value} at epoch {epoch}", epoch)
        return None


@dataclass(frozen=True)
class ExplodingRule:
    """``train_loss`` running away, off the scale it started at. Fires on the first epoch where:

    - the loss has been above ``scale`` x its first value for ``hold`` epochs in a row, and is now
      above ``spike`` x its best so far, or has grown by more than ``rate`` (relative)
      ``patience`` epochs in a row and is back within ``factor`` of its first value
      (loss >= first / ``factor``), or
    - it is above ``scale`` x its first value, not yet for ``hold`` epochs, at the end of
      max(``patience``, ``trained_patience``) epochs of such growth (a long climb from below), or
    - the loss had fallen to 1/``trained`` of its first value or below and, still at most
      ``scale`` x it, has since grown by more than ``rate`` ``trained_patience`` epochs in a row
      back to within ``factor`` of it (a trained model climbing back towards where it started).

    Defaults: a loss growing x3 per epoch from its start grows by 200% > ``rate`` 100%, so with
    ``patience`` 2 it fires on the second epoch of growth; from below twice its start, on its
    second epoch above it or its third epoch of growth. A spike is an explosion only on an epoch
    > 30x the best that is the second in a row above twice the start; a bump around an untrained
    start is left alone, and a slower divergence (x1.5 a step) to the spike limit.

    Each default is measured on benchmarks/data/real_curves.json.gz (benchmarks/corpus_detection.py,
    a row per setting): ``spike`` 30 (not 10), ``scale`` 2, ``trained`` 40, ``trained_patience`` 3
    and ``hold`` 2 each spare healthy curves whose loss spiked or bounced back and recovered, and
    none moves a broken curve that was within its latency goal past it. The healthy curves still
    stopped look like the divergences caught for the 2 epochs after onset the goal allows.

    A converged loss thousands of times below its start wiggles by large ratios (2e-6 -> 6e-6 ->
    3e-5 is two epochs of >100% growth) that are noise, not divergence: no test fires while the
    loss stays below ``factor`` of its start. A divergence from such a point is caught once it is
    back on that scale: on its third epoch of growth, or on its second epoch above twice its
    start. Every bound is a ratio of the trial's own losses (scale-free).

    NaN policy: non-finite values belong to the nonfinite rule; here they neither set the first
    value or the best nor extend a growth streak or a run above the start (both restart after
    one). A missing train_loss restarts the growth streak (growth per epoch cannot be read across
    it) and leaves the run as it was. Non-positive bests disable the spike test, and a
    non-positive first value the scale tests (a ratio to 0 or to a negative loss means nothing).
    ``scale`` 0 with ``hold`` 1 turns the level test off (the rule before that corpus); ``hold`` 1
    fires on the first epoch above it (the rule before ``hold``).
    """

    enabled: bool = True
    factor: float = field(default=10.0, metadata=bounds(gt=1))
    spike: float = field(default=30.0, metadata=bounds(gt=1))
    patience: int = field(default=2, metadata=bounds(ge=1))
    rate: float = field(default=1.0, metadata=bounds(gt=0))
    scale: float = field(default=2.0, metadata=bounds(ge=0))
    trained: float = field(default=40.0, metadata=bounds(gt=1))
    trained_patience: int = field(default=3, metadata=bounds(ge=1))
    hold: int = field(default=2, metadata=bounds(ge=1))

    def __post_init__(self) -> None:
        _validate(self, "health.exploding.")

    def above_start(self, loss: float, first: float) -> bool:
        """Is the loss above ``scale`` x its first value (always, for a non-positive first value)?"""
        return first <= 0 or loss > self.scale * first

    def was_trained(self, first: float, best: float | None) -> bool:
        """Had the loss fallen to 1/``trained`` of a positive first value?"""
        return first > 0 and best is not None and best * self.trained <= first

    @staticmethod
    def climb(first: float, best: float) -> str:
        """The tail of a verdict on a trained loss climbing back: where it had fallen to."""
        fall = f", 1/{fmt(first / best, 3)} of its first value" if best > 0 else ""
        return f", climbing back from its best {fmt(best)}{fall}"

    def growth_needed(self, held: bool, above: bool, trained: bool) -> int | None:
        """Epochs of growth in a row that fire the rule now (None: growth alone does not)."""
        if held:
            return self.patience
        if above:       # not yet for ``hold`` epochs: only a climb as long as a trained loss's
            return max(self.patience, self.trained_patience)
        return self.trained_patience if trained else None

    def check(self, history: History) -> Verdict | None:
        first = best = None
        best_epoch = run = 0       # run: epochs in a row above scale x first
        streak: list[float] = []  # the loss before the streak, then each grown value
        for epoch, row in enumerate(history, 1):
            loss = as_float(row.get("train_loss"))
            if loss is None or not math.isfinite(loss):
                streak, run = [], (run if loss is None else 0)
                continue
            if first is None:
                first = loss
            above = self.above_start(loss, first)
            run = run + 1 if above else 0
            held = run >= self.hold
            if held and best is not None and best > 0 and loss > self.spike * best and loss > first:
                return Verdict("exploding", f"train_loss {fmt(loss)} at epoch {epoch} is {loss / best:.1f}x "
                               f"its best {fmt(best)} (epoch {best_epoch}); limit {self.spike:g}x", epoch)
            previous = streak[-1] if streak else None
            if previous is not None and previous != 0 and (loss - previous) / abs(previous) > self.rate:
                streak.append(loss)
            else:
                streak = [loss]
            on_scale = first <= 0 or loss * self.factor >= first
            need = self.growth_needed(held, above, self.was_trained(first, best))
            if on_scale and need is not None and len(streak) - 1 >= need:
                values = " -> ".join(fmt(v) for v in streak[-need - 1:])
                back = "" if above else self.climb(first, best)
                return Verdict("exploding", f"train_loss grew by more than {self.rate:.0%} per epoch for "
                               f"{need} epochs in a row ({values}) at epoch {epoch}{back}", epoch)
            if best is None or loss < best:
                best, best_epoch = loss, epoch
        return None


@dataclass(frozen=True)
class FlatlineRule:
    """Nothing is being learned. Fires on the first epoch where any of these holds:

    - identical batch losses: ``train_batch_loss_std`` <= ``rel_tol`` x |train_loss|, in that
      very epoch when the model reports ``train_batches`` >= 3, never when it reports fewer; when
      it reports none, only when the epoch's loss also repeats the previous epoch's (within
      ``rel_tol``): one batch's spread is 0 by construction (the triplet model's random sampler
      deals a single batch an epoch on 3 classes) and two batch losses of a learning model meet
      within 1e-4 by chance (iris MLP curves with 2 batches did, benchmarks/data/real_curves.json.gz);
    - no gradient: ``train_grad_norm`` == 0 two epochs in a row (skipped when the model reports no
      gradient norm): after one epoch without a gradient Adam's momentum still moves the weights
      (a triplet run on iris in that corpus had one such epoch, then reached recall@1 0.93);
    - a constant loss: the relative spread (max - min) / max|loss| of ``train_loss`` over the last
      ``patience`` epochs is <= ``rel_tol`` (a constant 0.1, or a loss clamped at a floor, fires on
      the ``patience``-th epoch at that value).

    A loss of exactly 0 after non-zero ones is a satisfied objective, not a stuck one, and fires
    none of these; nor does a loss that has fallen to ``rel_tol`` x its first value or below, which
    is 0 on the scale it started at: a cross-entropy driven from 0.87 to 1e-7 sits at float32
    resolution, where the loss, the batch losses and the gradient stop changing (recorded on the
    wine data set, benchmarks/data/real_curves.json.gz). A loss that has been exactly 0 from the
    first epoch on had nothing to learn from and fires on the ``patience``-th epoch.

    rel_tol 1e-5: a loss that is stuck repeats itself to six digits or more (every flatline and
    collapse in benchmarks/data/real_curves.json.gz did), while a model that learns moves by more,
    even without shuffling noise: full-batch gradient descent with a small lr, or the tail of a
    cosine schedule, moves its loss by 1e-5 to 1e-4 a epoch (with 1e-4 the rules stop 14 more
    healthy curves of that corpus: benchmarks/corpus_detection.py).

    NaN policy: a non-finite or missing train_loss belongs to the nonfinite rule; here it empties
    the window, and the sub-rules that need it are skipped for that epoch.
    """

    enabled: bool = True
    patience: int = field(default=3, metadata=bounds(ge=2))
    rel_tol: float = field(default=1e-5, metadata=bounds(ge=0, lt=1))

    def __post_init__(self) -> None:
        _validate(self, "health.flatline.")

    def check(self, history: History) -> Verdict | None:
        window: list[float] = []
        learned = False  # has train_loss ever been non-zero?
        first: float | None = None
        no_grad = False  # was train_grad_norm 0 in the last epoch with a finite, non-converged loss?
        for epoch, row in enumerate(history, 1):
            loss = as_float(row.get("train_loss"))
            if loss is None or not math.isfinite(loss):
                window, no_grad = [], False
                continue
            first = loss if first is None else first
            window = (window + [loss])[-self.patience:]
            learned = learned or loss != 0
            converged = loss == 0 or abs(loss) <= self.rel_tol * abs(first)
            no_grad = no_grad and not converged
            if loss == 0:
                if not learned and len(window) == self.patience:
                    return Verdict("flatline", f"train_loss 0 at epoch {epoch} and at every epoch before: "
                                   "nothing to learn from", epoch)
                continue
            if converged:
                continue  # zero on the scale the loss started at
            spread = as_float(row.get("train_batch_loss_std"))
            batches = as_float(row.get("train_batches"))
            repeated = len(window) >= 2 and abs(window[-1] - window[-2]) <= self.rel_tol * abs(loss)
            if spread is not None and (batches >= 3 if batches is not None else repeated) and \
                    0 <= spread <= self.rel_tol * abs(loss):
                return Verdict("flatline", f"train_batch_loss_std {fmt(spread)} at epoch {epoch}: every "
                               f"batch had the same loss ({fmt(loss)})", epoch)
            grad = as_float(row.get("train_grad_norm"))
            no_grad, was_no_grad = grad is not None and grad == 0, no_grad
            if no_grad and was_no_grad:
                return Verdict("flatline", f"train_grad_norm 0 at epoch {epoch - 1} and epoch {epoch} with "
                               f"train_loss {fmt(loss)}: no gradient reaches the parameters", epoch)
            if len(window) < self.patience:
                continue
            top = max(abs(v) for v in window)
            relative = (max(window) - min(window)) / top
            if relative <= self.rel_tol:
                values = ", ".join(fmt(v) for v in window)
                return Verdict("flatline", f"train_loss unchanged at epoch {epoch}: {values} over "
                               f"{_span(epoch - self.patience + 1, epoch)} (relative spread {relative:.2g} "
                               f"<= {self.rel_tol:g})", epoch)
        return None


@dataclass(frozen=True)
class CollapsedRule:
    """A degeneracy metric the model declares (``collapse = {"train_emb_std": 1e-3}``) at or below
    its floor for ``patience`` epochs in a row.

    NaN policy: a non-finite value is not "at the floor" (NaN belongs to the nonfinite rule); it
    and a missing value both break the run of epochs for that metric.
    """

    enabled: bool = True
    patience: int = field(default=3, metadata=bounds(ge=1))

    def __post_init__(self) -> None:
        _validate(self, "health.collapsed.")

    def check(self, history: History, floors: Mapping[str, float]) -> Verdict | None:
        floors = collapse_floors(floors)
        runs = {metric: 0 for metric in floors}
        for epoch, row in enumerate(history, 1):
            for metric in sorted(floors):
                value = as_float(row.get(metric))
                if value is None or not math.isfinite(value) or value > floors[metric]:
                    runs[metric] = 0
                    continue
                runs[metric] += 1
                if runs[metric] >= self.patience:
                    return Verdict("collapsed", f"{metric} {fmt(value)} at epoch {epoch}: at or below its floor "
                                   f"{fmt(floors[metric])} over {_span(epoch - self.patience + 1, epoch)}", epoch)
        return None


def collapse_floors(collapse: Mapping[str, Any] | None, model: str = "") -> dict[str, float]:
    """A model's ``collapse``, checked (the config does, before any trial): metric -> finite floor."""
    where, floors = f"{model + ': ' if model else ''}collapse", {}
    if collapse is not None and not isinstance(collapse, Mapping):
        raise ConfigError(f"{where}: got {collapse!r}, expected a mapping of metric name -> finite floor")
    for metric, floor in (collapse or {}).items():
        value = as_float(floor)
        if not isinstance(metric, str) or value is None or not math.isfinite(value):
            raise ConfigError(f"{where}: got {metric!r}: {floor!r}, expected metric name -> finite floor")
        floors[metric] = value
    return floors


@dataclass(frozen=True)
class HealthConfig:
    nonfinite: bool = True
    exploding: ExplodingRule = field(default_factory=ExplodingRule)
    flatline: FlatlineRule = field(default_factory=FlatlineRule)
    collapsed: CollapsedRule = field(default_factory=CollapsedRule)

    def __post_init__(self) -> None:
        if not isinstance(self.nonfinite, bool):
            raise ConfigError(f"health.nonfinite: got {self.nonfinite!r}, expected true or false")


def exploding_as_run(written: Any, rule: ExplodingRule) -> ExplodingRule:
    """The exploding rule as a search ran it, from its search.yaml's ``health.exploding`` section as
    written (``written``) and the parsed rule. A run dir written before a setting existed holds
    every other setting but not that one: before ``spike``, a spike was stopped at ``factor`` x the
    best; before ``trained_patience``, a trained loss climbing back was stopped after ``patience``
    epochs of growth; before ``hold``, the first epoch above ``scale`` x the first value counted.
    (Runs before ``trained_patience`` also stopped a spike of a trained loss back between its
    first value and ``scale`` x it; on resume such a spike is no longer stopped.)"""
    if not isinstance(written, Mapping) or "factor" not in written:
        return rule
    if "spike" not in written:
        rule = dataclasses.replace(rule, spike=rule.factor)
    if "trained_patience" not in written:
        rule = dataclasses.replace(rule, trained_patience=rule.patience)
    if "hold" not in written:
        rule = dataclasses.replace(rule, hold=1)
    return rule


def assess(history: History, config: HealthConfig | None = None,
           collapse: Mapping[str, float] | None = None, *, objective: str | None = None) -> Verdict:
    """The verdict on a trial's history (``history[i]`` is the result of epoch i+1).

    ``collapse``: the model's degeneracy metrics and floors (``models.declared(name, "collapse")``).
    ``objective``: the objective's metric name, watched by the nonfinite rule as well.
    Returns the earliest firing verdict (ties: nonfinite, exploding, collapsed, flatline), or OK.
    """
    config = config if config is not None else HealthConfig()
    found: list[Verdict] = []
    if config.nonfinite:
        found.append(NonfiniteRule(objective).check(history))
    if config.exploding.enabled:
        found.append(config.exploding.check(history))
    if config.collapsed.enabled and collapse:
        found.append(config.collapsed.check(history, collapse))
    if config.flatline.enabled:
        found.append(config.flatline.check(history))
    fired = [v for v in found if v is not None]
    if not fired:
        return OK
    return min(fired, key=lambda v: v.epoch)  # min() keeps the first of equal epochs: rule order


__all__ = ["CollapsedRule", "ExplodingRule", "FlatlineRule", "HealthConfig", "NonfiniteRule", "OK",
           "STATUSES", "Verdict", "assess", "collapse_floors", "exploding_as_run"]
