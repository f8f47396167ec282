"""Polyphonic music as piano-rolls, for the RNN-RBM chapter (rnnrbm.py): MIDI files in and out, the Nottingham
database for users who have it, and the Bach chorales that music21 ships in its corpus.

A piano-roll is a binary matrix [n_frames, n_pitches] float32: row t holds the keys sounding during frame t,
column i the MIDI note pitch_low + i. rnnrbm.py's defaults: pitches 21..108 (the 88 piano keys, its
r = (21, 109)) and frames of dt = 0.3 s.

MIDI (the tutorial's modified `midi` package replaced by `mido`, the `music` extra):
  - `midi_to_roll(path, dt, pitch_low, n_pitches)`: a note sounding from t0 to t1 seconds (tempo changes
    followed) fills frames round(t0 / dt) .. round(t1 / dt) - 1, at least one frame; notes outside the
    pitch range and the percussion channel (10) are left out. A truncated, empty or malformed file is a
    DataError naming the file.
  - `roll_to_midi(roll, path, dt, pitch_low)`: each run of consecutive frames of one key becomes one note
    (velocity 90, one track, 120 beats a minute, 480 ticks a beat). Reading the file back gives the same
    piano-roll (tests/test_music.py).

Datasets (deeptut/registry.py DATASETS; each loader is `loader(cfg, data_dir) -> Music`):
  - "nottingham": the tutorial's Nottingham database of folk tunes (Nottingham.zip from the chapter's site),
    DATA_DIR/Nottingham/{train,valid,test}/*.mid or DATA_DIR/{train,valid,test}/*.mid: its own split, frames
    of `frame_seconds` (0.3 s, the tutorial's dt). Not reachable from every machine: --data-dir.
  - "jsb-chorales": the Bach chorales of music21's corpus (`music21.corpus.getComposer('bach')`, offline in
    the music21 wheel): the MusicXML files (.mxl/.xml; the Roman-numeral and Humdrum files are left out) whose
    score has exactly four parts (SATB; the settings with instrumental parts are left out). Each is
    transposed so that its key's tonic (music21's key analysis) is C (C major or C minor, the chapter's
    "common tonality"; the shift of -6..+5 semitones), quantised to frames of `frame_quarters` quarter notes
    (0.5: eighth notes; a note fills frames round(offset / q) .. round(end / q) - 1, at least one; ties
    merged), and split by piece: the pieces sorted by file name, permuted by RandomState(CHORALE_SPLIT_SEED),
    the first 60 % train, the next 20 % valid, the rest test (close to the 229/76/77 of the standard JSB
    benchmark, which is a different corpus edition: figures here are not comparable to it digit for digit).
Converted piano-rolls are cached as an .npz (DATA_DIR, or the user cache $XDG_CACHE_HOME/deeptut/<name>/)
keyed by the conversion's settings and the source files, so a run parses music21 once.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from deeptut.data.datasets import cache_dir
from deeptut.errors import DataError

PITCH_LOW = 21  # rnnrbm.py's r[0]: A0, the piano's lowest key
N_PITCHES = 88  # r[1] - r[0] = 109 - 21
DT = 0.3  # rnnrbm.py's dt: seconds per frame of a MIDI file
FRAME_QUARTERS = 0.5  # chorales: frames of an eighth note
TEMPO = 500_000  # microseconds per beat in written MIDI files: 120 beats a minute
TICKS_PER_BEAT = 480
VELOCITY = 90
PERCUSSION_CHANNEL = 9  # General MIDI channel 10, 0-based
CHORALE_SPLIT_SEED = 1234
SPLIT_FRACTIONS = (0.6, 0.2)  # train, valid; the rest is test
CACHE_FORMAT = 1
MAX_MIDI_BYTES = 16 * 2**20  # a folk tune is a few kB


@dataclass(frozen=True)
class PianoRolls:
    """One split: its pieces' piano-rolls one after another. `x` [n_frames, n_pitches] float32 0/1, `y`
    [n_pieces] int64 the pieces' lengths in frames (the names x, y let the run's data fingerprint read it)."""

    x: np.ndarray
    y: np.ndarray
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.y.ndim != 1 or int(self.y.sum()) != len(self.x) or len(self.names) != len(self.y):
            raise DataError(f"piano-rolls: {len(self.x)} frames, lengths summing to {int(self.y.sum())}, "
                            f"{len(self.names)} names for {len(self.y)} pieces")

    def sequences(self) -> list[np.ndarray]:
        """Each piece's piano-roll [n_frames_i, n_pitches] (views into x)."""
        ends = np.cumsum(self.y)
        return [self.x[e - n:e] for n, e in zip(self.y.tolist(), ends.tolist())]

    @classmethod
    def from_sequences(cls, rolls: list[np.ndarray], names: list[str] | tuple[str, ...]) -> "PianoRolls":
        n_pitches = rolls[0].shape[1] if rolls else N_PITCHES
        x = np.concatenate(rolls).astype(np.float32) if rolls else np.zeros((0, n_pitches), np.float32)
        return cls(x, np.array([len(r) for r in rolls], dtype=np.int64), tuple(names))


@dataclass(frozen=True)
class Music:
    """A music dataset's three splits, where it came from and how its frames were made."""

    train: PianoRolls
    valid: PianoRolls
    test: PianoRolls
    source: str  # the folder or corpus it was read from
    pitch_low: int = PITCH_LOW
    frame: str = f"{DT} s"  # what one frame is: "0.3 s", "0.5 quarter notes"


def _mido():
    try:
        import mido
    except ImportError:
        raise DataError("reading and writing MIDI files needs mido: pip install 'deeptut[music]'") from None
    return mido


# --- MIDI <-> piano-roll ------------------------------------------------------------------------------


def read_notes(path: str | Path) -> list[tuple[int, float, float]]:
    """The notes of a MIDI file as (pitch, start, end) in seconds, percussion left out. A file that mido
    cannot read (empty, truncated, not MIDI) is a DataError naming it."""
    mido = _mido()
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror}") from None
    if not data:
        raise DataError(f"{path}: empty file (0 bytes), not a MIDI file")
    if len(data) > MAX_MIDI_BYTES:
        raise DataError(f"{path}: {len(data)} bytes, more than the {MAX_MIDI_BYTES} a MIDI file here may have")
    if data[:4] != b"MThd":
        raise DataError(f"{path}: not a MIDI file (it does not start with the 'MThd' header)")
    try:
        mid = mido.MidiFile(file=io.BytesIO(data))
        events = list(mid)  # messages in playing order, .time in seconds since the previous one
    except EOFError:
        raise DataError(f"{path}: truncated MIDI file (the data ends inside a track)") from None
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise DataError(f"{path}: malformed MIDI file ({type(e).__name__}: {str(e)[:120]})") from None
    now = 0.0
    sounding: dict[tuple[int, int], float] = {}  # (channel, pitch) -> start
    notes = []
    for msg in events:
        now += msg.time
        if msg.type not in ("note_on", "note_off") or msg.channel == PERCUSSION_CHANNEL:
            continue
        key = (msg.channel, msg.note)
        if key in sounding:  # a note_off, or a note_on of a sounding key: the old note ends here
            notes.append((msg.note, sounding.pop(key), now))
        if msg.type == "note_on" and msg.velocity > 0:
            sounding[key] = now
    notes += [(p, t0, now) for (_, p), t0 in sounding.items()]  # never released: to the end
    return notes


def notes_to_roll(notes: list[tuple[int, float, float]], step: float, pitch_low: int = PITCH_LOW,
                  n_pitches: int = N_PITCHES) -> np.ndarray:
    """(pitch, start, end) in units of which one frame is `step` -> piano-roll [n_frames, n_pitches]
    float32: frames round(start / step) .. round(end / step) - 1 (at least one); pitches outside
    pitch_low .. pitch_low + n_pitches - 1 are left out."""
    spans = []
    for pitch, t0, t1 in notes:
        if pitch_low <= pitch < pitch_low + n_pitches and t1 >= t0:
            f0 = int(round(t0 / step))
            spans.append((pitch - pitch_low, f0, max(f0 + 1, int(round(t1 / step)))))
    roll = np.zeros((max((f1 for _, _, f1 in spans), default=0), n_pitches), dtype=np.float32)
    for i, f0, f1 in spans:
        roll[f0:f1, i] = 1.0
    return roll


def midi_to_roll(path: str | Path, dt: float = DT, pitch_low: int = PITCH_LOW,
                 n_pitches: int = N_PITCHES) -> np.ndarray:
    """A MIDI file as a piano-roll [n_frames, n_pitches] float32 of frames `dt` seconds long (rnnrbm.py's
    midiread(f, r, dt).piano_roll). A file without a single note in range is a DataError."""
    roll = notes_to_roll(read_notes(path), dt, pitch_low, n_pitches)
    if len(roll) == 0:
        raise DataError(f"{path}: no notes between MIDI pitches {pitch_low} and {pitch_low + n_pitches - 1}")
    return roll


def roll_to_midi(roll: np.ndarray, path: str | Path, dt: float = DT, pitch_low: int = PITCH_LOW) -> Path:
    """Write a piano-roll [n_frames, n_pitches] (0/1; > 0.5 counts as on) as a one-track MIDI file, a run
    of consecutive frames of one key as one note (rnnrbm.py's midiwrite). Returns the path."""
    mido = _mido()
    roll = np.asarray(roll) > 0.5
    if roll.ndim != 2:
        raise ValueError(f"a piano-roll is [n_frames, n_pitches]; got shape {roll.shape}")
    ticks_per_frame = dt * 1e6 / TEMPO * TICKS_PER_BEAT  # 0.3 s at 120 beats a minute: 288 ticks
    padded = np.zeros((len(roll) + 2, roll.shape[1]), dtype=np.int8)
    padded[1:-1] = roll
    change = np.diff(padded, axis=0)  # [n_frames + 1, n_pitches]: +1 a note starts at frame t, -1 ends
    events = []  # (tick, 0 = off first, pitch)
    for t, i in zip(*np.nonzero(change)):
        events.append((int(round(t * ticks_per_frame)), int(change[t, i] > 0), pitch_low + int(i)))
    events.sort()
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=TEMPO, time=0))
    last = 0
    for tick, on, pitch in events:
        track.append(mido.Message("note_on" if on else "note_off", note=pitch, velocity=VELOCITY if on else 0,
                                  time=tick - last))
        last = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    mid = mido.MidiFile(ticks_per_beat=TICKS_PER_BEAT)
    mid.tracks.append(track)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mid.save(str(path))
    return path


# --- the cache of converted piano-rolls -----------------------------------------------------------------


def _key(parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _cached(path: Path, build: Callable[[], dict[str, tuple[list[np.ndarray], list[str]]]]
            ) -> dict[str, PianoRolls]:
    """The splits stored in `path` (an .npz written here), else `build()`'s, then stored there (atomically;
    an unwritable place only costs the next run the conversion again)."""
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {s: PianoRolls(z[f"{s}_x"].astype(np.float32), z[f"{s}_y"].astype(np.int64),
                                      tuple(json.loads(str(z[f"{s}_names"])))) for s in ("train", "valid", "test")}
        except (OSError, ValueError, KeyError, DataError):
            pass  # a damaged cache is rebuilt
    splits = {s: PianoRolls.from_sequences(*v) for s, v in build().items()}
    arrays = {}
    for s, r in splits.items():
        arrays.update({f"{s}_x": r.x.astype(np.uint8), f"{s}_y": r.y, f"{s}_names": np.array(json.dumps(r.names))})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    except OSError:
        pass
    return splits


# --- Nottingham (and any folder of train/valid/test MIDI files) ---------------------------------------


def nottingham_dirs(data_dir: str | Path) -> dict[str, Path]:
    """The train/valid/test folders of the Nottingham database under data_dir (data_dir/Nottingham/... or
    data_dir/...), each holding *.mid files; else a DataError saying what is missing."""
    root = Path(data_dir)
    for base in (root / "Nottingham", root):
        dirs = {s: base / s for s in ("train", "valid", "test")}
        if all(d.is_dir() for d in dirs.values()):
            for s, d in dirs.items():
                if not any(d.glob("*.mid")):
                    raise DataError(f"{d}: no .mid files (the Nottingham database's {s} split)")
            return dirs
    raise DataError(f"{root}: no Nottingham database: expected {root}/Nottingham/{{train,valid,test}}/*.mid "
                    f"(or {root}/{{train,valid,test}}/*.mid), as Nottingham.zip from the tutorial's site "
                    f"(http://www-etud.iro.umontreal.ca/~boulanni/Nottingham.zip) unpacks")


def load_midi_folders(data_dir: str | Path, dt: float = DT, pitch_low: int = PITCH_LOW,
                      n_pitches: int = N_PITCHES, cache: Path | None = None) -> Music:
    """The MIDI files of data_dir's train/valid/test folders as piano-rolls (cached in `cache`, default
    data_dir/.deeptut-cache/ or the user cache)."""
    dirs = nottingham_dirs(data_dir)
    listing = {s: sorted(d.glob("*.mid")) for s, d in dirs.items()}
    stats = {s: [[p.name, p.stat().st_size, int(p.stat().st_mtime)] for p in ps] for s, ps in listing.items()}
    key = _key({"format": CACHE_FORMAT, "dt": dt, "low": pitch_low, "n": n_pitches, "files": stats})
    if cache is None:
        cache = cache_dir("nottingham")

    def build():
        return {s: ([midi_to_roll(p, dt, pitch_low, n_pitches) for p in ps], [p.name for p in ps])
                for s, ps in listing.items()}

    splits = _cached(cache / f"rolls-{key}.npz", build)
    return Music(source=str(Path(data_dir).resolve()), pitch_low=pitch_low, frame=f"{dt:g} s", **splits)


def load_nottingham(cfg: Any, data_dir: str | Path | None = None) -> Music:
    """The registry's "nottingham" loader: --data-dir, else $DEEPTUT_DATA, else the user cache's folder."""
    if data_dir is None:
        env = os.environ.get("DEEPTUT_DATA")
        data_dir = Path(env) if env else cache_dir("nottingham")
    return load_midi_folders(data_dir, cfg.frame_seconds, cfg.pitch_low, cfg.n_visible)


# --- the Bach chorales of music21's corpus ------------------------------------------------------------


def transposition_to_c(tonic_pitch_class: int) -> int:
    """Semitones that move a key with this tonic (0 = C .. 11 = B) to C, in -6..+5."""
    return (-tonic_pitch_class + 6) % 12 - 6


def score_to_roll(score: Any, step: float = FRAME_QUARTERS, pitch_low: int = PITCH_LOW,
                  n_pitches: int = N_PITCHES, transpose: bool = True) -> np.ndarray:
    """A music21 score as a piano-roll of frames `step` quarter notes long, transposed to C (when
    `transpose`). Grace notes (no duration) are left out."""
    shift = transposition_to_c(score.analyze("key").tonic.pitchClass) if transpose else 0
    notes = []
    for n in score.stripTies().flatten().notes:
        t0, t1 = float(n.offset), float(n.offset + n.quarterLength)
        if t1 > t0:
            notes += [(p.midi + shift, t0, t1) for p in n.pitches]
    return notes_to_roll(notes, step, pitch_low, n_pitches)


def chorale_paths() -> list[Path]:
    """music21's Bach MusicXML files, sorted by name."""
    try:
        from music21 import corpus
    except ImportError:
        raise DataError("the Bach chorales come from music21's corpus: pip install 'deeptut[music]'") from None
    return sorted((Path(p) for p in corpus.getComposer("bach") if Path(p).suffix in (".mxl", ".xml")),
                  key=lambda p: p.name)


def split_pieces(names: list[str], seed: int = CHORALE_SPLIT_SEED) -> dict[str, list[int]]:
    """Indices of the train/valid/test pieces: a RandomState(seed) permutation of the sorted pieces, cut at
    SPLIT_FRACTIONS."""
    order = np.random.RandomState(seed).permutation(len(names))
    a = int(round(SPLIT_FRACTIONS[0] * len(names)))
    b = a + int(round(SPLIT_FRACTIONS[1] * len(names)))
    return {"train": sorted(order[:a].tolist()), "valid": sorted(order[a:b].tolist()),
            "test": sorted(order[b:].tolist())}


def load_chorale_rolls(step: float = FRAME_QUARTERS, pitch_low: int = PITCH_LOW, n_pitches: int = N_PITCHES,
                       cache: Path | None = None, limit: int | None = None) -> Music:
    """The four-part Bach chorales of music21's corpus, split by piece, transposed and quantised (see the
    module's docstring), cached in `cache` (default: the user cache's jsb-chorales/). `limit`: only the
    first pieces (sorted by name; tests)."""
    import music21

    paths = chorale_paths()[:limit]
    key = _key({"format": CACHE_FORMAT, "step": step, "low": pitch_low, "n": n_pitches, "music21":
                music21.__version__, "files": [p.name for p in paths], "seed": CHORALE_SPLIT_SEED})
    cache = cache_dir("jsb-chorales") if cache is None else Path(cache)

    def build():
        from music21 import converter

        rolls, names = [], []
        for p in paths:
            try:
                score = converter.parse(str(p))
            except Exception as e:  # music21 raises many kinds; name the file
                raise DataError(f"{p}: music21 cannot parse it ({type(e).__name__}: {str(e)[:120]})") from None
            if len(score.parts) != 4:
                continue
            rolls.append(score_to_roll(score, step, pitch_low, n_pitches))
            names.append(p.name)
        split = split_pieces(names)
        return {s: ([rolls[i] for i in idx], [names[i] for i in idx]) for s, idx in split.items()}

    splits = _cached(cache / f"rolls-{key}.npz", build)
    return Music(source=f"music21 {music21.__version__} corpus, bach", pitch_low=pitch_low,
                 frame=f"{step:g} quarter notes", **splits)


def load_chorales(cfg: Any, data_dir: str | Path | None = None) -> Music:
    """The registry's "jsb-chorales" loader (the cache in --data-dir when given)."""
    return load_chorale_rolls(cfg.frame_quarters, cfg.pitch_low, cfg.n_visible,
                              None if data_dir is None else Path(data_dir))
