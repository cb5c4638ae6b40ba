"""Writes sample_sentiment.jsonl: 2,000 short template reviews, 1,000 positive and 1,000 negative.

Deterministic (fixed seed, no downloads): run `python3 make_sample_sentiment.py` in this folder
to regenerate the file byte for byte. The sentiment lives in clearly polar words, so a tiny
byte-level model can learn it; there are no negations or sarcasm on purpose.
"""

import json
import random

# Examples per label: enough that a byte-level model sees every polar word in many contexts
# and generalises instead of memorising, and a 10% validation split of 200 texts.
PER_CLASS = 1000

SUBJECTS = [
    "the movie", "this film", "the plot", "the acting", "the soundtrack", "the ending",
    "the food", "the service", "this book", "the hotel", "our stay", "the staff",
    "the camera", "the battery", "this phone", "the concert", "the game", "the app",
]
POSITIVE = [
    "great", "wonderful", "excellent", "delightful", "amazing", "superb",
    "lovely", "fantastic", "brilliant", "charming", "enjoyable", "perfect",
]
NEGATIVE = [
    "awful", "terrible", "boring", "dreadful", "horrible", "disappointing",
    "bland", "mediocre", "dull", "tedious", "annoying", "useless",
]
ADVERBS = ["really", "truly", "quite", "very", "so"]
TEMPLATES = [
    "{S} was {a}.",
    "I thought {s} was {a}.",
    "{S} is {adv} {a}.",
    "Honestly, {s} felt {a}.",
    "{S}? {A}, {adv} {a}.",
    "We found {s} {adv} {a}.",
]
VERB = {"positive": ["loved", "enjoyed", "adored"], "negative": ["hated", "regretted", "disliked"]}
VERB_TEMPLATES = ["I {v} {s}.", "We {v} {s}, {adv} {a}."]


def review(rng, label):
    words = POSITIVE if label == "positive" else NEGATIVE
    s = rng.choice(SUBJECTS)
    a = rng.choice(words)
    adv = rng.choice(ADVERBS)
    if rng.random() < 0.25:
        t = rng.choice(VERB_TEMPLATES)
        return t.format(v=rng.choice(VERB[label]), s=s, a=a, adv=adv)
    t = rng.choice(TEMPLATES)
    return t.format(S=s[0].upper() + s[1:], s=s, a=a, A=a[0].upper() + a[1:], adv=adv)


def main():
    rng = random.Random(20240611)
    seen = set()
    rows = []
    for label in ["positive", "negative"]:
        count = 0
        while count < PER_CLASS:
            text = review(rng, label)
            if text in seen:
                continue
            seen.add(text)
            rows.append({"text": text, "label": label})
            count += 1
    rng.shuffle(rows)
    with open("sample_sentiment.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
