"""The files a run writes next to its checkpoints, and their columns: named once, importable
without torch or Lightning, so that reports read exactly what training wrote."""

TEST_PREDICTIONS = "test_predictions.csv"
PREDICTIONS = "predictions.csv"
TRAIN_SUBJECTS = "train_subjects.csv"
SUBJECT, IMAGE, LABEL, PREDICTION = "subject", "image", "label", "prediction"
"""The columns of a predictions CSV."""
