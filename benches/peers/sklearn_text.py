#!/usr/bin/env python3
"""Peer of `attune train --task text --dataset bbc-news --folds 5` (issue 17): TF-IDF and
logistic regression (scikit-learn) on exactly the folds Attune tested, read from the run's
`folds.json` (each article's path under the data set's directory, its label and its fold).

Per fold: the vectoriser and the classifier are fitted on the other folds' articles and score
the fold's. Articles are read as Attune reads them (UTF-8, undecodable bytes replaced). The
TF-IDF is scikit-learn's default with sublinear term frequencies and words of 2+ characters
seen in at least 2 training articles; LogisticRegression(C=10, max_iter=2000). One JSON line:
the mean and sample standard deviation of the fold accuracies, each fold's, and the seconds
spent fitting and scoring (reading excluded).

  python benches/peers/sklearn_text.py --run runs/bbc --data-dir .data --json
"""
import argparse
import json
import os
import statistics
import sys
import time


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a cross-validated run directory (holds folds.json)")
    p.add_argument("--data-dir", default=".data", help="the cache `cargo xtask data` fills (holds bbc-news/)")
    p.add_argument("--c", type=float, default=10.0, help="inverse regularisation of the logistic regression")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    import sklearn

    with open(os.path.join(a.run, "folds.json"), encoding="utf-8") as f:
        listing = json.load(f)
    root = os.path.join(a.data_dir, "bbc-news")
    texts, labels, folds = [], [], []
    for t in listing["texts"]:
        path = os.path.join(root, t["text"])
        if not os.path.isfile(path):
            sys.exit(f"{path} is missing: run `cargo xtask data --only bbc-news` (folds.json lists articles)")
        with open(path, "rb") as f:
            texts.append(f.read().decode("utf-8", errors="replace"))
        labels.append(t["label"])
        folds.append(t["fold"])
    k = listing["folds"]
    accs, start = [], time.perf_counter()
    for i in range(k):
        train = [j for j in range(len(texts)) if folds[j] != i]
        test = [j for j in range(len(texts)) if folds[j] == i]
        vec = TfidfVectorizer(sublinear_tf=True, min_df=2)
        x_train = vec.fit_transform([texts[j] for j in train])
        clf = LogisticRegression(C=a.c, max_iter=2000)
        clf.fit(x_train, [labels[j] for j in train])
        pred = clf.predict(vec.transform([texts[j] for j in test]))
        accs.append(sum(p == labels[j] for p, j in zip(pred, test)) / len(test))
    out = {
        "impl": "sklearn-tfidf-logreg", "sklearn": sklearn.__version__, "folds": k, "texts": len(texts),
        "eval_accuracy": statistics.mean(accs), "eval_accuracy_std": statistics.stdev(accs) if k > 1 else 0.0,
        "per_fold": accs, "fit_s": time.perf_counter() - start,
    }
    print(json.dumps(out) if a.json else
          f"TF-IDF + logistic regression, {k} folds: {100 * out['eval_accuracy']:.2f}% ± "
          f"{100 * out['eval_accuracy_std']:.2f}% ({', '.join(f'{100 * x:.2f}' for x in accs)})")


if __name__ == "__main__":
    main()
