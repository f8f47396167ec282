"""A generated slot-filling corpus in the manner of ATIS (dataset "slots"): flight requests made from
templates ("show me flights from {from} to {to} on {day}", ...), every word tagged in BIO form with ATIS's
slot names (B-fromloc.city_name, I-toloc.city_name, B-depart_date.day_name, B-airline_name, ...).

No BIO-tagged corpus ships inside a package this project can install offline (NLTK's conll2000 and
conll2002 are downloads, not part of the nltk wheel; Debian has no such package), so the offline
measurements use this corpus; the tutorial's ATIS files (dataset "atis") are read by data/atis.py.

What makes it more than a lookup table:
- cities are drawn with Zipf weights from a long list (some multi-word: "salt lake city"), so many are
  rare; as the chapter does for ATIS, a word seen once in the training sentences, and every test word never
  seen in them, becomes <UNK>, and the tag of an <UNK> city must come from its context ("from <UNK> to");
- a city's role depends on its neighbours: "from X to Y", "to Y from X", "between X and Y", "leaving X for
  Y", "X to Y" with no keyword, a stop "in X" after "stop";
- times, dates and fares use ATIS's number form (DIGIT, DIGITDIGIT) and its relative words (before, after).
The draw is a fixed function of the seed (Python's random.Random), so the corpus is the same everywhere.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import numpy as np

from deeptut.data.atis import SlotCorpus, TaggedSplit, VALID_FRACTION

UNK = "<UNK>"
DEFAULT_SEED = 2013  # the corpus of dataset "slots" (the year of the chapter's paper)
N_TRAIN, N_TEST = 4978, 893  # ATIS's official training (split 80/20 into train/valid) and test sentences

CITIES = (
    "boston", "denver", "atlanta", "pittsburgh", "san francisco", "dallas", "philadelphia", "baltimore",
    "washington", "oakland", "new york", "chicago", "seattle", "los angeles", "miami", "cleveland",
    "houston", "memphis", "nashville", "las vegas", "phoenix", "detroit", "charlotte", "orlando", "tampa",
    "st. louis", "milwaukee", "minneapolis", "kansas city", "salt lake city", "san diego", "san jose",
    "indianapolis", "columbus", "cincinnati", "toronto", "montreal", "burbank", "ontario", "long beach",
    "westchester county", "newark", "st. petersburg", "fort worth", "tacoma", "sacramento", "portland",
    "austin", "el paso", "albuquerque", "tucson", "omaha", "des moines", "little rock", "new orleans",
    "jacksonville", "raleigh", "richmond", "buffalo", "hartford", "providence", "anchorage", "honolulu",
    "boise", "spokane", "reno", "fresno", "wichita", "tulsa", "knoxville", "lexington", "louisville",
    "birmingham", "mobile", "savannah", "charleston", "norfolk", "syracuse", "rochester", "albany",
)
# ... and a long tail of made-up towns ("ashford", "fort kelby", "marden falls"), rare under the Zipf weights
_ROOTS = ("ash", "kel", "mar", "bran", "wil", "hol", "dun", "fen", "gar", "lin", "or", "pem", "rad", "sel", "tor",
          "ber", "cal", "dor", "hart", "mil", "nor", "ros", "stan", "wal", "york")
_ENDS = ("ford", "by", "den", "ton", "wick", "ley", "mouth", "field", "ham", "stead")
TOWNS = tuple(f"{pattern.format(r + e)}" for i, (r, e) in enumerate((r, e) for r in _ROOTS for e in _ENDS)
              for pattern in (("{}", "fort {}", "{} falls", "{} springs")[i % 4],))
PLACES = CITIES + TOWNS
AIRLINES = ("american airlines", "united", "delta", "us air", "continental", "northwest", "twa",
            "alaska airlines", "america west", "lufthansa", "canadian airlines", "midwest express")
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
DAY_NUMBERS = ("first", "second", "third", "fourth", "fifth", "tenth", "twelfth", "fifteenth", "twentieth")
PERIODS = ("morning", "afternoon", "evening", "night")
CLASSES = ("first class", "economy", "coach", "business class", "thrift")
COSTS = ("cheapest", "lowest", "least expensive")
TIMES = ("DIGIT pm", "DIGIT am", "DIGITDIGIT pm", "DIGIT o'clock", "DIGITDIGIT o'clock", "noon", "DIGIT DIGITDIGIT pm")
FILLERS = ("please", "i want", "i would like", "can you", "show me", "could you tell me", "give me")


def _phrase(words: str, slot: str | None) -> list[tuple[str, str]]:
    """A phrase tagged B-slot, I-slot, ... (or O)."""
    toks = words.split()
    if slot is None:
        return [(t, "O") for t in toks]
    return [(t, ("B-" if i == 0 else "I-") + slot) for i, t in enumerate(toks)]


class _Draw:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        ranks = np.arange(1, len(PLACES) + 1)
        self.city_weights = list(1.0 / ranks ** 1.3)  # Zipf: the tail (the towns) is rare

    def city(self) -> str:
        return self.rng.choices(PLACES, self.city_weights)[0]

    def two_cities(self) -> tuple[str, str]:
        a = self.city()
        b = self.city()
        while b == a:
            b = self.city()
        return a, b

    def pick(self, options: tuple[str, ...]) -> str:
        return self.rng.choice(options)

    def maybe(self, p: float = 0.5) -> bool:
        return self.rng.random() < p


def _when(d: _Draw, kind: str = "depart") -> list[tuple[str, str]]:
    """An optional date / time / period of the departure (or arrival)."""
    r = d.rng.random()
    if r < 0.25:
        return _phrase("on", None) + _phrase(d.pick(DAYS), f"{kind}_date.day_name")
    if r < 0.40:
        return (_phrase("on", None) + _phrase(d.pick(MONTHS), f"{kind}_date.month_name")
                + _phrase(d.pick(DAY_NUMBERS), f"{kind}_date.day_number"))
    if r < 0.55:
        return _phrase("in the", None) + _phrase(d.pick(PERIODS), f"{kind}_time.period_of_day")
    if r < 0.70:
        rel = d.pick(("before", "after", "around"))
        return _phrase(rel, f"{kind}_time.time_relative") + _phrase(d.pick(TIMES), f"{kind}_time.time")
    if r < 0.78:
        return _phrase(d.pick(DAYS), f"{kind}_date.day_name") + _phrase(d.pick(PERIODS), f"{kind}_time.period_of_day")
    return []


def sentence(d: _Draw) -> list[tuple[str, str]]:
    """One templated request, as (word, tag) pairs."""
    a, b = d.two_cities()
    fr, to = _phrase(a, "fromloc.city_name"), _phrase(b, "toloc.city_name")
    lead = _phrase(d.pick(FILLERS), None) if d.maybe(0.4) else []
    t = d.rng.randrange(12)
    if t == 0:
        s = _phrase("flights from", None) + fr + _phrase("to", None) + to + _when(d)
    elif t == 1:
        s = _phrase("flights to", None) + to + _phrase("from", None) + fr + _when(d)
    elif t == 2:
        s = (_phrase("what", None) + _phrase(d.pick(AIRLINES), "airline_name") + _phrase("flights go from", None)
             + fr + _phrase("to", None) + to + _when(d))
    elif t == 3:
        s = (_phrase("the", None) + _phrase(d.pick(COSTS), "cost_relative")
             + (_phrase("round trip", "round_trip") if d.maybe() else [])
             + _phrase("fare from", None) + fr + _phrase("to", None) + to)
    elif t == 4:
        s = (_phrase("a", None) + _phrase(d.pick(CLASSES), "class_type") + _phrase("ticket from", None) + fr
             + _phrase("to", None) + to + _when(d))
    elif t == 5:
        s = _phrase("is there a flight between", None) + fr + _phrase("and", None) + to + _when(d)
    elif t == 6:
        s = _phrase("what flights leave", None) + fr + _phrase("for", None) + to + _when(d)
    elif t == 7:
        s = _phrase(d.pick(AIRLINES), "airline_name") + fr + _phrase("to", None) + to + _when(d)
    elif t == 8:
        s = (_phrase("i need to fly from", None) + fr + _phrase("to", None) + to + _phrase("arriving", None)
             + _phrase(d.pick(("before", "after", "by")), "arrive_time.time_relative")
             + _phrase(d.pick(TIMES), "arrive_time.time"))
    elif t == 9:
        stop = d.city()
        s = (_phrase("flights from", None) + fr + _phrase("to", None) + to + _phrase("with a stop in", None)
             + _phrase(stop, "stoploc.city_name"))
    elif t == 10:
        s = (_phrase("which airlines fly from", None) + fr + _phrase("to", None) + to
             + (_phrase("on", None) + _phrase(d.pick(DAYS), "depart_date.day_name") if d.maybe() else []))
    else:
        s = (_phrase("what is the fare from", None) + fr + _phrase("to", None) + to + _phrase("on", None)
             + _phrase(d.pick(AIRLINES), "airline_name"))
    return lead + s


def generate(n_train: int = N_TRAIN, n_test: int = N_TEST, seed: int = DEFAULT_SEED) -> SlotCorpus:
    """The corpus: n_train sentences split 80/20 into train / valid (as the chapter splits ATIS's), n_test
    test sentences; words seen once in training and test words unseen there become <UNK>."""
    d = _Draw(random.Random(seed))
    official = [sentence(d) for _ in range(n_train)]
    test = [sentence(d) for _ in range(n_test)]
    counts = Counter(w for s in official for w, _ in s)
    known = sorted(w for w, c in counts.items() if c > 1)
    words = tuple(known + [UNK])
    tags = tuple(sorted({t for s in official + test for _, t in s}))
    w2i, t2i = {w: i for i, w in enumerate(words)}, {t: i for i, t in enumerate(tags)}
    unk = w2i[UNK]

    def split(sents: list[list[tuple[str, str]]]) -> TaggedSplit:
        ws = np.array([w2i.get(w, unk) for s in sents for w, _ in s], np.int64)
        ls = np.array([t2i[t] for s in sents for _, t in s], np.int64)
        return TaggedSplit(ws, ls, np.array([len(s) for s in sents], np.int64))

    cut = n_train - max(1, int(round(n_train * VALID_FRACTION)))
    return SlotCorpus(split(official[:cut]), split(official[cut:]), split(test), words=words, tags=tags,
                      source=f"generated slot-filling corpus (data/slots.py, seed {seed}, {n_train} + {n_test} "
                             f"sentences)")


def load_for_config(cfg: Any, data_dir: Any = None) -> SlotCorpus:
    """registry.DATASETS["slots"]: the fixed corpus (seed DEFAULT_SEED, ATIS's sizes); no files."""
    return generate()
