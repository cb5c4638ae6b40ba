"""Writes BBC News (fetched by `cargo xtask data --only bbc-news`) as the text task's JSONL.

    python3 scripts/data/bbc_jsonl.py [DATA_DIR] OUT_DIR

Reads DATA_DIR/bbc-news/<class>/<NNN>.txt (DATA_DIR: $ATTUNE_DATA or .data), keeps the first
copy of each exact duplicate (as attune_data::bbc_news does; docs/data.md), decodes the one
Latin-1 file as Latin-1, and writes OUT_DIR/train.jsonl and OUT_DIR/test.jsonl: a stratified
split with 20% of each class held out, shuffled with seed 0. Used for the hard against soft
pooling comparison in docs/ram.md until the text task reads BBC News itself.
"""

import json
import os
import random
import sys


def main():
    args = sys.argv[1:]
    if len(args) not in (1, 2):
        raise SystemExit(__doc__)
    data = args[0] if len(args) == 2 else os.environ.get("ATTUNE_DATA", ".data")
    out = args[-1]
    root = os.path.join(data, "bbc-news")
    if not os.path.isdir(root):
        raise SystemExit(f"{root} is missing: run `cargo xtask data --only bbc-news` first")
    seen, by_class = set(), {}
    for label in sorted(os.listdir(root)):
        for name in sorted(os.listdir(os.path.join(root, label))):
            raw = open(os.path.join(root, label, name), "rb").read()
            if raw in seen:
                continue
            seen.add(raw)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            by_class.setdefault(label, []).append(text)
    rng = random.Random(0)
    train, test = [], []
    for label, texts in by_class.items():
        rng.shuffle(texts)
        held = round(len(texts) * 0.2)
        test += [{"text": t, "label": label} for t in texts[:held]]
        train += [{"text": t, "label": label} for t in texts[held:]]
    rng.shuffle(train)
    os.makedirs(out, exist_ok=True)
    for name, rows in (("train", train), ("test", test)):
        with open(os.path.join(out, f"{name}.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    print(f"{len(train)} train and {len(test)} test articles of {len(by_class)} classes in {out}")


if __name__ == "__main__":
    main()
