#!/usr/bin/env python3
"""Peer of `attune train --task recsys` (issue 17): RecBole 1.2.1's SASRec on MovieLens-100K,
on the CPU, with the split and metrics of Attune's recsys task (crates/lab/src/tasks/recsys.rs):

- leave-one-out by time (RecBole's `LS: valid_and_test`, `order: TO`): each user's last item is
  the test item, the one before it the valid item. The script rebuilds Attune's split from the
  same file (a stable sort by timestamp within each user) and checks that RecBole's test rows
  have the same targets, so both sides rank the same items. RecBole's ml-100k defaults would
  break ties that the file does not have: they min-max normalise every float field and keep
  floats as float32, which merges interactions seconds apart and moves 4 users' test items; so
  normalisation is off and RecBole reads a copy whose timestamps are replaced by their ranks
  (exact in float32, same order and ties), under another name (RecBole reads its own bundled
  file for any data set called ml-100k);
- full ranking over every item (RecBole scores the padding item -inf and, for sequential models,
  does not mask the items a user saw before, as Attune's crate::ranking), HR@10 and NDCG@10;
- then the same trained model on RecBole's `uni100` protocol (100 negatives the user never saw,
  drawn by RecBole: the sampled metrics' draws differ from Attune's, their protocol does not).

It trains with RecBole's defaults for SASRec (CE loss, 2 layers, 2 heads, hidden 64, inner 256,
dropout 0.5, Adam 1e-3, batch 2048) unless told otherwise, early-stopping on valid NDCG@10 with
patience `--stopping-step`, and prints one JSON line: the metrics, epochs, and the wall time
of the whole run and of training alone (data preparation excluded).

  python benches/peers/recbole_sasrec.py --data-dir .data --threads 2 --json
"""
import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections import defaultdict


def attune_split(inter_path):
    """Each user's (valid item, test item) tokens, as Attune's LeaveOneOut builds them."""
    rows = defaultdict(list)
    with open(inter_path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        names = [h.split(":")[0] for h in header]
        u, i, t = names.index("user_id"), names.index("item_id"), names.index("timestamp")
        for line in f:
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            rows[fields[u]].append((float(fields[t]), fields[i]))
    out = {}
    for user, events in rows.items():
        events.sort(key=lambda e: e[0])  # stable: ties keep file order, as Rust's sort_by_key
        out[user] = (events[-2][1], events[-1][1])
    return out


# RecBole always reads its own bundled file for a data set named "ml-100k" (the same file, but
# unmodified), so the copy has another name.
COPY = "ml-100k-ranked"


def exact_copy(inter_path, work):
    """A copy of the file for RecBole with each timestamp replaced by its dense rank among the
    file's timestamps: RecBole stores float fields as float32, which rounds 1998's Unix times to
    64 s; ranks below 2^24 survive exactly, with order and ties unchanged. Returns the copy's
    data path."""
    with open(inter_path, encoding="utf-8") as f:
        header = f.readline()
        lines = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    t = [h.split(":")[0] for h in header.rstrip("\n").split("\t")].index("timestamp")
    rank = {v: r for r, v in enumerate(sorted({float(x[t]) for x in lines}))}
    os.makedirs(os.path.join(work, COPY))
    with open(os.path.join(work, COPY, COPY + ".inter"), "w", encoding="utf-8") as f:
        f.write(header)
        for x in lines:
            x[t] = str(rank[float(x[t])])
            f.write("\t".join(x) + "\n")
    return work


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=".data", help="the cache `cargo xtask data` fills (holds ml-100k/)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--stopping-step", type=int, default=10, help="valid evaluations without improvement")
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--json", action="store_true", help="only the JSON line on stdout")
    p.add_argument("--verbose", action="store_true", help="RecBole's per-epoch log on stderr")
    a = p.parse_args()

    import torch
    torch.set_num_threads(a.threads)
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    inter = os.path.join(a.data_dir, "ml-100k", "ml-100k.inter")
    if not os.path.isfile(inter):
        sys.exit(f"{inter} is missing: run `cargo xtask data --only ml-100k` first")
    start = time.perf_counter()
    work = tempfile.mkdtemp(prefix="recbole-")
    base = {
        "data_path": exact_copy(inter, os.path.join(work, "data")), "dataset": COPY,
        "checkpoint_dir": os.path.join(work, "saved"),
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "train_neg_sample_args": None, "loss_type": "CE", "MAX_ITEM_LIST_LENGTH": a.max_len,
        "hidden_size": a.hidden, "inner_size": 4 * a.hidden, "n_layers": a.layers, "n_heads": a.heads,
        "hidden_dropout_prob": a.dropout, "attn_dropout_prob": a.dropout, "learning_rate": a.lr,
        "train_batch_size": a.batch, "eval_batch_size": 4096, "epochs": a.epochs, "stopping_step": a.stopping_step,
        "metrics": ["Hit", "NDCG"], "topk": [10], "valid_metric": "NDCG@10", "seed": a.seed,
        "reproducibility": True, "use_gpu": False, "device": "cpu", "show_progress": False,
        "log_wandb": False, "state": "INFO" if a.verbose else "ERROR", "normalize_all": False,
    }
    config = Config(model="SASRec", config_dict=base)
    init_seed(config["seed"], config["reproducibility"])
    if not a.verbose:
        logging.getLogger().setLevel(logging.ERROR)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)

    # Same split as Attune: RecBole's test rows target each user's last item by Attune's rule.
    want = attune_split(inter)
    feat = test_data.dataset.inter_feat
    users = dataset.id2token("user_id", feat["user_id"].numpy())
    items = dataset.id2token("item_id", feat["item_id"].numpy())
    same = sum(want[u][1] == i for u, i in zip(users, items))
    if same != len(want) or len(users) != len(want):
        sys.exit(f"RecBole's test split differs from Attune's: {same} of {len(want)} users agree")

    model = SASRec(config, train_data.dataset).to(config["device"])
    trainer = Trainer(config, model)
    t0 = time.perf_counter()
    trainer.fit(train_data, valid_data, saved=True, show_progress=False, verbose=a.verbose)
    train_s = time.perf_counter() - t0
    full = trainer.evaluate(test_data, load_best_model=True, show_progress=False)

    sampled_cfg = Config(model="SASRec", config_dict={**base, "eval_args": {**base["eval_args"], "mode": "uni100"}})
    init_seed(sampled_cfg["seed"], sampled_cfg["reproducibility"])
    _, _, test_sampled = data_preparation(sampled_cfg, create_dataset(sampled_cfg))
    sampled = trainer.evaluate(test_sampled, load_best_model=False, show_progress=False)

    out = {
        "impl": "recbole-1.2.1-sasrec", "threads": a.threads, "users": len(want), "split_agrees": same,
        "hr@10": float(full["hit@10"]), "ndcg@10": float(full["ndcg@10"]),
        "hr@10_sampled": float(sampled["hit@10"]), "ndcg@10_sampled": float(sampled["ndcg@10"]),
        "epochs": len(trainer.train_loss_dict),
        "best_valid_ndcg@10": float(trainer.best_valid_score), "train_s": train_s,
        "wall_s": time.perf_counter() - start, "torch": torch.__version__,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
