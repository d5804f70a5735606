"""Trace-time checks shared by the kNN and linear-probe evaluations."""

from __future__ import annotations

from ssljax._common import check_count, check_dim, check_labels, check_rank


def check_split(fn: str, features, labels, *, num_classes: int,
                features_name: str, labels_name: str) -> None:
  """`features` [N, D] with one integer label in [0, num_classes) per row."""
  check_rank(features, 2, features_name, fn)
  check_rank(labels, 1, labels_name, fn)
  check_dim(fn, 0, **{features_name: features, labels_name: labels})
  check_labels(labels, num_classes, labels_name, fn)


def check_num_classes(num_classes, fn: str) -> None:
  check_count(num_classes, "num_classes", fn, minimum=1)
