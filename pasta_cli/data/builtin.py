"""The built-in offline task (`task=builtin`): does sentence 2 faithfully restate sentence 1?

Sentence 1 states a small fact with several slots (who, what, how many, which colour, which
day, ...). Sentence 2 restates part of it, often paraphrased. It is `entailment` when every slot
it mentions carries the value sentence 1 gives it, `not_entailment` when exactly one slot was
changed to a value of the same kind that occurs nowhere in sentence 1:

    "The red car is parked behind the blue house." / "The car is red."      -> entailment
    "The red car is parked behind the blue house." / "The car is green."    -> not_entailment
    "Anna bought seven apples at the market on Monday." / "Seven apples were bought by Anna."
    "Tom gave the camera to Lucy after lunch." / "Lucy got the camera from Emma."

Every value comes from the same pool in both classes, so neither sentence alone says anything
about the label: the model has to compare tokens across the two sentences. A frozen encoder's
pooled [CLS] does not carry that comparison (a linear head on it stays near chance), while PASTA's
vectors at [CLS]/[SEP] learn to route it there within an epoch. Two labels, named and ordered as
GLUE's RTE (0 entailment, 1 not_entailment), so the task takes the same pair code path.

Deterministic from the seed (its own random.Random, no global state), no download, no files.
"""

from __future__ import annotations

import random

LABELS = ["entailment", "not_entailment"]

COLORS = ["red", "blue", "green", "yellow", "black", "white", "brown", "gray", "orange", "purple"]
MATERIALS = ["wooden", "metal", "plastic", "glass", "stone", "paper", "leather", "wool"]
COLORED = ["car", "house", "bicycle", "door", "boat", "truck", "chair", "table", "lamp", "box",
           "bag", "hat", "coat", "cup", "bottle", "fence", "bench", "kite", "umbrella", "book"]
MADE = ["chair", "table", "box", "bowl", "cup", "bench", "door", "fence", "shelf", "lamp", "bag",
        "bucket", "basket", "tray", "bottle", "spoon", "plate", "jar"]
PLACES = ["behind", "next to", "in front of", "to the left of", "to the right of", "beside",
          "near", "just behind"]
NAMES = ["Anna", "Tom", "Lucy", "Mark", "Sarah", "David", "Emma", "James", "Maria", "Peter",
         "Laura", "Paul", "Kate", "John", "Nina", "Simon"]
NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
FRUITS = ["apples", "oranges", "lemons", "pears", "peaches", "bananas", "melons", "plums", "tomatoes",
          "potatoes", "onions", "carrots"]
SHOPS = ["market", "shop", "store", "bakery", "station"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
THINGS = ["camera", "book", "letter", "ticket", "guitar", "map", "wallet", "key", "phone", "laptop",
          "umbrella", "jacket", "ball", "picture", "radio", "watch"]
MEALS = ["lunch", "dinner", "breakfast", "school", "work", "class"]
EVENTS = ["meeting", "interview", "lesson", "call", "appointment", "class", "concert", "match"]
HOURS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven"]
ROOMS = [str(n) for n in range(2, 40)]


def _swap(rng: random.Random, pool: list[str], used: set[str]) -> str:
    """A value of the same kind that sentence 1 does not contain (compared by lower-case word)."""
    return rng.choice([v for v in pool if v.lower() not in used])


def _words(text: str) -> set[str]:
    return {w.strip(".,").lower() for w in text.split()}


def _objects(rng: random.Random, attributes: list[str], nouns: list[str], change: bool):
    """Two objects with their own attributes, one of them restated: "The car is red."."""
    a1, a2 = rng.sample(attributes, 2)
    n1, n2 = rng.sample(nouns, 2)
    place = rng.choice(PLACES)
    s1 = rng.choice([
        "The {a1} {n1} is {p} the {a2} {n2}.",
        "There is a {a1} {n1} {p} the {a2} {n2}.",
        "I saw the {a1} {n1} {p} the {a2} {n2}.",
        "Look at the {a1} {n1} {p} that {a2} {n2}.",
    ]).format(a1=a1, n1=n1, a2=a2, n2=n2, p=place)
    noun, attr = (n1, a1) if rng.randrange(2) == 0 else (n2, a2)
    if change:
        attr = _swap(rng, attributes, _words(s1))
    s2 = rng.choice(["The {n} is {a}.", "That {n} is {a}.", "The {n} there is {a}.",
                     "There is a {a} {n}."]).format(n=noun, a=attr)
    return s1, s2


def _colors(rng, change):
    return _objects(rng, COLORS, COLORED, change)


def _materials(rng, change):
    return _objects(rng, MATERIALS, MADE, change)


def _shopping(rng: random.Random, change: bool):
    name, num, fruit, shop, day = (rng.choice(NAMES), rng.choice(NUMBERS), rng.choice(FRUITS),
                                   rng.choice(SHOPS), rng.choice(DAYS))
    s1 = rng.choice([
        "{name} bought {num} {fruit} at the {shop} on {day}.",
        "On {day}, {name} bought {num} {fruit} at the {shop}.",
        "At the {shop} on {day}, {name} bought {num} {fruit}.",
    ]).format(name=name, num=num, fruit=fruit, shop=shop, day=day)
    template = rng.choice([
        ("{name} bought {num} {fruit}.", ("name", "num", "fruit")),
        ("{Num} {fruit} were bought by {name}.", ("name", "num", "fruit")),
        ("{name} was at the {shop} on {day}.", ("name", "shop", "day")),
        ("{name} went shopping on {day}.", ("name", "day")),
        ("The {fruit} came from the {shop}.", ("fruit", "shop")),
    ])
    slots = {"name": name, "num": num, "fruit": fruit, "shop": shop, "day": day}
    if change:
        slot = rng.choice(template[1])
        pool = {"name": NAMES, "num": NUMBERS, "fruit": FRUITS, "shop": SHOPS, "day": DAYS}[slot]
        slots[slot] = _swap(rng, pool, _words(s1))
    return s1, template[0].format(Num=slots["num"].capitalize(), **slots)


def _giving(rng: random.Random, change: bool):
    giver, taker = rng.sample(NAMES, 2)
    thing, meal = rng.choice(THINGS), rng.choice(MEALS)
    s1 = rng.choice([
        "{giver} gave the {thing} to {taker} after {meal}.",
        "After {meal}, {giver} gave the {thing} to {taker}.",
        "{giver} handed {taker} the {thing} after {meal}.",
    ]).format(giver=giver, taker=taker, thing=thing, meal=meal)
    template = rng.choice([
        ("{taker} got the {thing} from {giver}.", ("giver", "taker", "thing")),
        ("{giver} gave {taker} the {thing}.", ("giver", "taker", "thing")),
        ("The {thing} was given to {taker}.", ("taker", "thing")),
        ("{taker} received a {thing} after {meal}.", ("taker", "thing", "meal")),
    ])
    slots = {"giver": giver, "taker": taker, "thing": thing, "meal": meal}
    if change:
        slot = rng.choice(template[1])
        pool = {"giver": NAMES, "taker": NAMES, "thing": THINGS, "meal": MEALS}[slot]
        slots[slot] = _swap(rng, pool, _words(s1))
    return s1, template[0].format(**slots)


def _schedule(rng: random.Random, change: bool):
    event, name, hour, room = rng.choice(EVENTS), rng.choice(NAMES), rng.choice(HOURS), rng.choice(ROOMS)
    s1 = rng.choice([
        "The {event} with {name} starts at {hour} o'clock in room {room}.",
        "At {hour} o'clock, {name} has the {event} in room {room}.",
        "{name} will join the {event} in room {room} at {hour} o'clock.",
    ]).format(event=event, name=name, hour=hour, room=room)
    template = rng.choice([
        ("The {event} starts at {hour} o'clock.", ("event", "hour")),
        ("The {event} is in room {room}.", ("event", "room")),
        ("{name} has a {event} at {hour} o'clock.", ("name", "event", "hour")),
        ("{name} will be in room {room}.", ("name", "room")),
    ])
    slots = {"event": event, "name": name, "hour": hour, "room": room}
    if change:
        slot = rng.choice(template[1])
        pool = {"event": EVENTS, "name": NAMES, "hour": HOURS, "room": ROOMS}[slot]
        slots[slot] = _swap(rng, pool, _words(s1))
    return s1, template[0].format(**slots)


FAMILIES = (_colors, _materials, _shopping, _giving, _schedule)


def _article(text: str) -> str:
    """"a" -> "an" before a vowel."""
    words = text.split(" ")
    for i, w in enumerate(words[:-1]):
        if w in ("a", "A") and words[i + 1][0].lower() in "aeiou":
            words[i] = w + "n"
    return " ".join(words)


def example(rng: random.Random, label: int) -> dict:
    """One pair of the given label: a fact family drawn at random, restated or changed."""
    family = rng.choice(FAMILIES)
    s1, s2 = family(rng, change=LABELS[label] == "not_entailment")
    return {"sentence1": _article(s1), "sentence2": _article(s2), "label": label}


def build_splits(seed: int = 0, train_size: int = 2000, dev_size: int = 500,
                 test_size: int = 500) -> dict[str, list[dict]]:
    """{"train", "validation", "test"}: rows {"sentence1", "sentence2", "label"}.

    Labels are balanced exactly (within one row) in every split, in shuffled order; no
    (sentence1, sentence2) pair occurs twice, within a split or across splits.
    """
    rng = random.Random(seed)
    seen: set[tuple[str, str]] = set()
    splits = {}
    for name, size in (("train", train_size), ("validation", dev_size), ("test", test_size)):
        labels = [i % len(LABELS) for i in range(size)]
        rng.shuffle(labels)
        rows = []
        for label in labels:
            while True:
                row = example(rng, label)
                key = (row["sentence1"], row["sentence2"])
                if key not in seen:
                    seen.add(key)
                    rows.append(row)
                    break
        splits[name] = rows
    return splits
