"""Optuna's side of the search benchmark (docs/benchmarks-search.md).

For each task (hpo_tables.TASKS) and seed, runs Optuna's RandomSampler, TPESampler,
NSGAIISampler and CmaEsSampler, each with its defaults and `seed=seed`, for --trials trials on
an in-memory study, and prints one JSON line per run:

    {"impl": "optuna", "sampler": "tpe", "task": "branin", "seed": 0, "trials": 200,
     "optimum": 0.397..., "best_after": {"50": ..., "100": ..., "200": ...}, "secs": ...}

best_after[n] is the best objective among the first n trials (n in 50, 100, 200 up to --trials,
and --trials itself); the report subtracts `optimum` to get the simple regret.

The HPOLib space: the three categoricals through suggest_categorical, the six ordinal
parameters through suggest_int(name, 0, len - 1). Optuna's CMA-ES handles the int parameters
(rounded from its continuous search) and cannot model categoricals: it samples those with its
independent sampler (RandomSampler by default; the warning it logs is switched off here).

--overhead: 1000 (--overhead-trials) ask + tell trials of the Branin function (trivially
cheap) with TPE and with random, in memory and with RDBStorage("sqlite:///...") on a fresh
file, printing {"impl": "optuna", "mode": "overhead", "sampler", "storage", "trials",
"secs_per_trial"}.

--overhead --storage URL [--trials-list 1000,10000]: the same rounds with random (and TPE when
--samplers names it) in a new study "overhead-SAMPLER-SIZE" per size of RDBStorage(URL), URL
being sqlite:///PATH or postgresql+psycopg2://USER@HOST:PORT/DB (benches/peers/bench_storage.sh),
printing {"impl": "optuna", "mode": "storage", "sampler", "storage": "sqlite"|"postgres",
"trials", "secs_per_trial", "secs_per_trial_last"}; the last is the mean over the last 1000
trials, the cost per trial once the study has that size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings

import optuna

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hpo_tables  # noqa: E402

SAMPLERS = ["random", "tpe", "nsga2", "cmaes"]
CHECKPOINTS = [50, 100, 200]


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """Optuna's sampler called `name`, with its defaults and the given seed."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    raise SystemExit(f"unknown sampler {name!r}; use some of {','.join(SAMPLERS)}")


def hpolib_objective(header: dict, values):
    """The mean val_loss of the configuration the trial suggests (hpo_tables' definition)."""
    params = header["params"]

    def objective(trial: optuna.Trial) -> float:
        indices = []
        for p in params:
            if p["categorical"]:
                choice = trial.suggest_categorical(p["name"], p["choices"])
                indices.append(p["choices"].index(choice))
            else:
                indices.append(trial.suggest_int(p["name"], 0, len(p["choices"]) - 1))
        return float(values[hpo_tables.table_index(header, indices)])

    return objective


def branin_objective(trial: optuna.Trial) -> float:
    return hpo_tables.branin(trial.suggest_float("x1", -5.0, 10.0), trial.suggest_float("x2", 0.0, 15.0))


def hartmann6_objective(trial: optuna.Trial) -> float:
    return hpo_tables.hartmann6([trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(1, 7)])


def task_objective(task: str, tables: str):
    """(objective, optimum) of a task."""
    if task == "branin":
        return branin_objective, hpo_tables.BRANIN_MIN
    if task == "hartmann6":
        return hartmann6_objective, hpo_tables.HARTMANN6_MIN
    if task in hpo_tables.HPOLIB_DATASETS:
        path = os.path.join(tables, f"{task}.table")
        if not os.path.exists(path):
            raise SystemExit(f"{path} is missing; export it: python benches/peers/hpo_tables.py --out {tables}")
        header, values = hpo_tables.load_table(path)
        return hpolib_objective(header, values), header["min"]
    raise SystemExit(f"unknown task {task!r}; use some of {','.join(hpo_tables.TASKS)}")


def checkpoints(trials: int) -> list[int]:
    return sorted({n for n in CHECKPOINTS if n <= trials} | {trials})


def run(task: str, objective, optimum: float, sampler: str, seed: int, trials: int) -> dict:
    study = optuna.create_study(direction="minimize", sampler=make_sampler(sampler, seed))
    start = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    secs = time.perf_counter() - start
    values = [t.value for t in study.trials]
    best_after = {str(n): min(values[:n]) for n in checkpoints(trials)}
    return {
        "impl": "optuna",
        "sampler": sampler,
        "task": task,
        "seed": seed,
        "trials": trials,
        "optimum": optimum,
        "best_after": best_after,
        "secs": secs,
    }


def overhead(sampler: str, storage_kind: str, trials: int, tmp: str) -> dict:
    storage = None
    if storage_kind == "sqlite":
        path = os.path.join(tmp, f"overhead-{sampler}.db")
        storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    study = optuna.create_study(direction="minimize", sampler=make_sampler(sampler, 0), storage=storage)
    start = time.perf_counter()
    for _ in range(trials):
        trial = study.ask()
        study.tell(trial, branin_objective(trial))
    secs = time.perf_counter() - start
    return {
        "impl": "optuna",
        "mode": "overhead",
        "sampler": sampler,
        "storage": storage_kind,
        "trials": trials,
        "secs_per_trial": secs / trials,
    }


TAIL = 1000


def storage_overhead(sampler: str, url: str, trials: int) -> dict:
    """Times `trials` ask + tell rounds in a new study of RDBStorage(url)."""
    storage = optuna.storages.RDBStorage(url)
    name = f"overhead-{sampler}-{trials}"
    study = optuna.create_study(direction="minimize", sampler=make_sampler(sampler, 0), storage=storage, study_name=name)
    secs = []
    for _ in range(trials):
        start = time.perf_counter()
        trial = study.ask()
        study.tell(trial, branin_objective(trial))
        secs.append(time.perf_counter() - start)
    return {
        "impl": "optuna",
        "mode": "storage",
        "sampler": sampler,
        "storage": "sqlite" if url.startswith("sqlite") else "postgres",
        "trials": trials,
        "secs_per_trial": sum(secs) / trials,
        "secs_per_trial_last": sum(secs[-TAIL:]) / len(secs[-TAIL:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", default="target/bench-search/tables", help="hpo_tables.py --out directory")
    parser.add_argument("--tasks", default=",".join(hpo_tables.TASKS))
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--seeds", type=int, default=10, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--overhead", action="store_true", help="time ask + tell instead")
    parser.add_argument("--overhead-trials", type=int, default=1000)
    parser.add_argument("--trials-list", help="with --storage: the study sizes, e.g. 1000,10000")
    parser.add_argument("--storage", help="with --overhead: an RDBStorage URL to time instead of memory/sqlite")
    args = parser.parse_args()

    optuna.logging.disable_default_handler()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    samplers = args.samplers.split(",")
    for name in samplers:
        make_sampler(name, 0)

    if args.overhead and args.storage:
        sizes = [int(n) for n in (args.trials_list or str(args.overhead_trials)).split(",") if n]
        for sampler in [s for s in ["random", "tpe"] if s in samplers]:
            for size in sizes:
                print(json.dumps(storage_overhead(sampler, args.storage, size)), flush=True)
        return
    if args.overhead:
        with tempfile.TemporaryDirectory() as tmp:
            for storage_kind in ["memory", "sqlite"]:
                for sampler in [s for s in ["random", "tpe"] if s in samplers]:
                    print(json.dumps(overhead(sampler, storage_kind, args.overhead_trials, tmp)), flush=True)
        return

    if args.trials < 1:
        raise SystemExit("--trials must be at least 1")
    for task in args.tasks.split(","):
        objective, optimum = task_objective(task, args.tables)
        for sampler in samplers:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                print(json.dumps(run(task, objective, optimum, sampler, seed, args.trials)), flush=True)


if __name__ == "__main__":
    main()
