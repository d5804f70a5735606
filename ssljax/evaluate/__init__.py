"""Evaluation of frozen features: kNN, linear probe, collapse metrics.

    from ssljax import evaluate
    acc = evaluate.knn_accuracy(train_z, train_y, test_z, test_y, num_classes=10)
    probe = evaluate.linear_probe(train_z, train_y, test_z, test_y, num_classes=10)
    evaluate.embedding_std(z), evaluate.rankme(z)

Everything here takes feature arrays, never a model: extract features with
the encoder first. Accuracies are fractions in [0, 1].

The standard protocols on a pre-trained run, which train on augmented views
through the encoder, are in two submodules imported on their own (they use
`ssljax.train`, which imports this package):

    from ssljax.evaluate import protocols, supervised
    protocols.run("linear", config, state, workdir)     # linear evaluation
    protocols.run("finetune", config, state, workdir)   # fine-tuning

`supervised` is their shared loop (`fit`, `Classifier`), `protocols` their
recipes, classifiers and layer-wise learning-rate decay (docs/evaluation.md).
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
