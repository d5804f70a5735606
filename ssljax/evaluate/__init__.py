"""Evaluation of frozen features: kNN, linear probe, collapse metrics.

    from ssljax import evaluate
    acc = evaluate.knn_accuracy(train_z, train_y, test_z, test_y, num_classes=10)
    probe = evaluate.linear_probe(train_z, train_y, test_z, test_y, num_classes=10)
    evaluate.embedding_std(z), evaluate.rankme(z)

Everything takes feature arrays, never a model: extract features with the
encoder first. Accuracies are fractions in [0, 1].
"""

from ssljax.evaluate.collapse import embedding_std, rankme
from ssljax.evaluate.knn import KnnAccuracy, knn_accuracy, knn_classify
from ssljax.evaluate.linear import (LinearParams, LinearProbeResult,
                                    LinearProbeState, class_balanced_subset,
                                    linear_probe, linear_probe_init,
                                    linear_probe_loss, linear_probe_optimizer,
                                    linear_probe_step)

__all__ = (
    "knn_classify", "knn_accuracy", "KnnAccuracy",
    "linear_probe", "linear_probe_init", "linear_probe_step",
    "linear_probe_loss", "linear_probe_optimizer", "class_balanced_subset",
    "LinearParams", "LinearProbeState", "LinearProbeResult",
    "embedding_std", "rankme",
)
