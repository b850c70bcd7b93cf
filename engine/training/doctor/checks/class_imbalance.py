"""The ``class_imbalance`` check: before training, classes of very different sizes that nothing balances."""

from __future__ import annotations

from engine.data.health_problems import IMBALANCE_WARNING_RATIO
from engine.training.callback import LoopState
from engine.training.doctor.check import DoctorCheck
from engine.training.doctor.registry import register_check


@register_check
class ClassImbalance(DoctorCheck):
    """Before training, warns when the largest class has ``IMBALANCE_WARNING_RATIO`` (3) times the smallest's images
    and nothing balances them (``optim.class_balance`` is ``none``)."""

    name = "class_imbalance"
    default = True
    title = "Imbalanced classes"
    description = (
        "Before training, warns when the largest class has at least 3x the images of the smallest and "
        "optim.class_balance is none, and suggests weighting the loss by class."
    )

    def before_fit(self, state: LoopState) -> None:
        health = self.context.health
        if health is None or self.context.config.optim.class_balance != "none":
            return
        if health.imbalance_ratio < IMBALANCE_WARNING_RATIO:
            return
        counts = {label: count for label, count in health.class_counts.items() if count > 0}
        largest = max(counts, key=counts.__getitem__)
        smallest = min(counts, key=counts.__getitem__)
        message = (
            f"Class '{largest}' has {counts[largest]} images and '{smallest}' only {counts[smallest]} "
            f"({health.imbalance_ratio:.1f} to 1). Trained as they are, the model learns to favour the large "
            "classes and gets few of the rare ones right, while overall accuracy hides it. Weigh the loss by "
            "class (optim.class_balance: weighted_loss), or draw rare classes more often (balanced_sampler)."
        )
        self.raise_diagnosis(state, self.diagnose(
            "warning", message,
            evidence={"imbalance_ratio": health.imbalance_ratio, "largest_class": largest,
                      "largest_count": counts[largest], "smallest_class": smallest,
                      "smallest_count": counts[smallest], "classes": list(health.class_counts),
                      "counts": list(health.class_counts.values())},
            fix={"optim.class_balance": "weighted_loss"},
        ), kind="imbalance")
