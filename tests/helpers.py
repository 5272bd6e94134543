"""Data shared by several test modules (imported from the tests folder)."""

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def digits_split():
    """scikit-learn's digits scaled to [0, 1], split 70/30, stratified, seed 0:
    (X_train, X_test, y_train, y_test)."""
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.3, random_state=0, stratify=y)
