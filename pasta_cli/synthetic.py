"""The built-in offline task (`task=builtin`): attribute binding across a sentence pair.

Sentence 1 describes two objects, each with its own attribute of one kind (two colours, or two
materials, ...) and a spatial relation between them: "The red car is parked behind the old
house." Sentence 2 restates one attribute of one object: "The car is red." It is `entailment`
when the attribute is the one sentence 1 gives that object, `not_entailment` when it is the
*other* object's attribute. Both attributes and both nouns of sentence 2 always occur in sentence
1, so the bag of words says nothing about the label; only binding the adjective to its noun in
sentence 1 and comparing with sentence 2 does.

Deterministic from the seed (random.Random, no global state), no download, no files.
"""

from __future__ import annotations

import random

LABELS = ["entailment", "not_entailment"]
NEGATIVE = "swap"

# Attribute kinds: the two objects of a pair take two different values of one kind.
ATTRIBUTES = {
    "color": ["red", "blue", "green", "yellow", "black", "white", "brown", "gray", "orange", "purple"],
    "material": ["wooden", "metal", "plastic", "glass", "stone", "paper", "leather", "wool"],
}

# Nouns (single words) that can take each attribute kind.
NOUNS = {
    "color": ["car", "house", "bicycle", "door", "boat", "truck", "chair", "table", "lamp", "box",
              "bag", "hat", "coat", "cup", "bottle", "fence", "bench", "kite", "umbrella", "book"],
    "material": ["chair", "table", "box", "bowl", "cup", "bench", "door", "fence", "shelf", "lamp",
                 "bag", "bucket", "basket", "tray", "bottle", "spoon", "plate", "jar"],
}

# Sentence-1 templates: {a1} {n1} first object, {a2} {n2} second object.
PREMISES = [
    "The {a1} {n1} is parked behind the {a2} {n2}.",
    "The {a1} {n1} stands next to the {a2} {n2}.",
    "The {a1} {n1} is in front of the {a2} {n2}.",
    "A {a1} {n1} was left beside a {a2} {n2}.",
    "The {a1} {n1} is to the left of the {a2} {n2}.",
    "We found the {a1} {n1} under the {a2} {n2}.",
    "There is a {a1} {n1} near the {a2} {n2}.",
    "The {a1} {n1} was placed on top of the {a2} {n2}.",
    "My sister put the {a1} {n1} behind the {a2} {n2}.",
    "The {a1} {n1} leans against the {a2} {n2}.",
]

# Sentence-2 templates: {n} the object asked about, {a} the attribute claimed.
HYPOTHESES = [
    "The {n} is {a}.",
    "The {n} is {a}.",
    "The {n} there is {a}.",
    "That {n} is {a}.",
]


def _example(rng: random.Random, label: int) -> dict:
    kind = rng.choice(sorted(ATTRIBUTES))
    a1, a2 = rng.sample(ATTRIBUTES[kind], 2)
    n1, n2 = rng.sample(NOUNS[kind], 2)
    premise = rng.choice(PREMISES)
    # "a" before a vowel sound: the templates with the indefinite article
    s1 = premise.format(a1=a1, n1=n1, a2=a2, n2=n2)
    s1 = _articles(s1)
    target = rng.randrange(2)  # which object sentence 2 talks about
    noun, own, other = (n1, a1, a2) if target == 0 else (n2, a2, a1)
    if LABELS[label] == "entailment":
        attr = own
    elif NEGATIVE == "swap":
        attr = other
    else:
        attr = rng.choice([a for a in ATTRIBUTES[kind] if a not in (a1, a2)])
    s2 = rng.choice(HYPOTHESES).format(n=noun, a=attr)
    return {"sentence1": s1, "sentence2": s2, "label": label}


def _articles(text: str) -> str:
    words = text.split(" ")
    for i, w in enumerate(words[:-1]):
        if w in ("A", "a") and words[i + 1][0] in "aeiou":
            words[i] = w + "n"
    return " ".join(words)


def build_splits(seed: int = 0, train_size: int = 2000, dev_size: int = 500,
                 test_size: int = 500) -> dict[str, list[dict]]:
    """{"train", "validation", "test"}: rows {"sentence1", "sentence2", "label"}, labels exactly
    balanced (up to one row per split), no (sentence1, sentence2) pair repeated within or across
    splits."""
    rng = random.Random(seed)
    seen: set[tuple[str, str]] = set()
    splits = {}
    for name, size in (("train", train_size), ("validation", dev_size), ("test", test_size)):
        labels = [i % len(LABELS) for i in range(size)]
        rng.shuffle(labels)
        rows = []
        for label in labels:
            while True:
                row = _example(rng, label)
                key = (row["sentence1"], row["sentence2"])
                if key not in seen:
                    seen.add(key)
                    rows.append(row)
                    break
        splits[name] = rows
    return splits
