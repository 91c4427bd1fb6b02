"""Real data sets with declared public domains: digits, Fashion-MNIST, IDX folders, npz arrays, tables."""

from .base import Dataset, as_batches, iter_batches
from .idx import FASHION_MNIST_CLASSES, load_fashion_mnist, load_idx_folder, read_idx
from .holdout import HOLDOUT_SALT, holdout_mask
from .loaders import SPECS, load, load_digits, load_npz
from .schema import Schema
from .tables import draft_schema, load_table, observe_table, read_table, schema_hints, write_table

__all__ = [
    "Dataset", "iter_batches", "as_batches", "load", "load_digits", "load_npz", "holdout_mask", "HOLDOUT_SALT",
    "load_fashion_mnist", "load_idx_folder", "read_idx", "FASHION_MNIST_CLASSES", "SPECS",
    "Schema", "load_table", "read_table", "write_table", "draft_schema", "observe_table",
    "schema_hints",
]  # fmt: skip
