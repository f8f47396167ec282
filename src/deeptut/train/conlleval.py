"""Chunk-level precision, recall and F1 of BIO (IOB2) slot tags, as the CoNLL-2000 `conlleval` script counts
them (the tutorial's rnnslu.py pipes its predictions through conlleval.pl; this is the same arithmetic in
Python, no Perl).

A tag is `PREFIX-TYPE` (split at the first hyphen: "B-toloc.city_name" is prefix B, type
"toloc.city_name") or a bare prefix ("O"). A chunk starts where conlleval's `startOfChunk` says so:
    B after anything; I after O or at a sentence start (a chunk that starts with I- is a chunk);
    any tag other than O after a tag of another type (B-a I-b is two chunks, the second starting with I-);
and ends where `endOfChunk` says so (before B or O, before a tag of another type, at the sentence end).
Two adjacent B- chunks of one type are two chunks. conlleval also knows IOBES's E and the bracket tags
[ and ]; they are handled the same way here. Sentences are kept apart as the tutorial does it (it writes
"BOS O O" before and "EOS O O" after each sentence): every sentence starts and ends outside any chunk.

A predicted chunk is correct when it starts and ends exactly where a true chunk does, with the same type.
    precision = 100 * correct / predicted chunks  (0 when nothing is predicted)
    recall    = 100 * correct / true chunks       (0 when there are none)
    F1        = 2 * precision * recall / (precision + recall)   (0 when both are 0)
conlleval prints these with two decimals; the tutorial reads the printed F1 back, so its "NEW BEST"
comparisons are between two-decimal numbers (`printed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence


@dataclass(frozen=True)
class ChunkScore:
    correct: int  # predicted chunks matching a true chunk exactly (start, end, type)
    predicted: int  # chunks in the predictions (conlleval's foundGuessed)
    true: int  # chunks in the ground truth (conlleval's foundCorrect)
    tokens: int  # words scored
    correct_tags: int  # words whose tag is exactly right (conlleval's accuracy, without BOS/EOS)

    @property
    def precision(self) -> float:  # % of predicted chunks that are right
        return 100.0 * self.correct / self.predicted if self.predicted else 0.0

    @property
    def recall(self) -> float:  # % of true chunks found
        return 100.0 * self.correct / self.true if self.true else 0.0

    @property
    def f1(self) -> float:  # %, harmonic mean of the two
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def accuracy(self) -> float:  # % of words tagged right
        return 100.0 * self.correct_tags / self.tokens if self.tokens else 0.0

    def printed(self) -> dict[str, float]:
        """{'p', 'r', 'f1'} rounded to two decimals, as conlleval prints them and the tutorial reads them."""
        return {"p": round(self.precision, 2), "r": round(self.recall, 2), "f1": round(self.f1, 2)}


def split_tag(tag: str) -> tuple[str, str]:
    """(prefix, type): conlleval's /^([^-]*)-(.*)$/; a tag without a hyphen is its own prefix, type ""."""
    prefix, sep, kind = tag.partition("-")
    return (prefix, kind) if sep else (tag, "")


def end_of_chunk(prev_tag: str, tag: str, prev_type: str, kind: str) -> bool:
    """Does a chunk end between the previous word (prev_tag, prev_type) and this one? (conlleval's)"""
    end = ((prev_tag in ("B", "I") and tag in ("B", "O"))
           or (prev_tag == "E" and tag in ("E", "I", "O")))
    if prev_tag not in ("O", ".") and prev_type != kind:
        end = True
    return end or prev_tag in ("[", "]")  # bracket chunks have length 1


def start_of_chunk(prev_tag: str, tag: str, prev_type: str, kind: str) -> bool:
    """Does a chunk start at this word? (conlleval's)"""
    start = ((tag == "B" and prev_tag in ("B", "I", "O"))
             or (tag == "I" and prev_tag == "O")
             or (tag == "E" and prev_tag in ("E", "O"))
             or (tag == "I" and prev_tag == "E"))
    if tag not in ("O", ".") and prev_type != kind:
        start = True
    return start or tag in ("[", "]")


def chunks(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """The chunks of one sentence as (first word, last word, type), by conlleval's rules."""
    out: list[tuple[int, int, str]] = []
    prev, prev_type, begin = "O", "", -1
    for i, tag in enumerate(list(tags) + ["O"]):  # the trailing O is the tutorial's "EOS O O"
        cur, kind = split_tag(tag)
        if begin >= 0 and end_of_chunk(prev, cur, prev_type, kind):
            out.append((begin, i - 1, prev_type))
            begin = -1
        if i < len(tags) and start_of_chunk(prev, cur, prev_type, kind):
            begin = i
        prev, prev_type = cur, kind
    return out


def conlleval(predicted: Iterable[Sequence[str]], truth: Iterable[Sequence[str]]) -> ChunkScore:
    """Score predicted tag sequences against the true ones, sentence by sentence (two iterables of equal
    length, each sentence the same number of tags in both)."""
    correct = n_pred = n_true = tokens = tags_right = 0
    predicted, truth = list(predicted), list(truth)
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predicted sentences for {len(truth)} true ones")
    for i, (p, t) in enumerate(zip(predicted, truth)):
        if len(p) != len(t):
            raise ValueError(f"sentence {i}: {len(p)} predicted tags for {len(t)} words")
        pc, tc = chunks(p), chunks(t)
        correct += len(set(pc) & set(tc))
        n_pred, n_true = n_pred + len(pc), n_true + len(tc)
        tokens += len(t)
        tags_right += sum(a == b for a, b in zip(p, t))
    return ChunkScore(correct, n_pred, n_true, tokens, tags_right)
