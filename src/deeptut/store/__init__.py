"""Persistence: every file deeptut writes or reads back, in one place.

    files.py       atomic writes, bounded reads, JSON (read_bounded, read_json), the background writer
    tensors.py     safetensors files: deterministic writes, headers checked before anything is allocated
    checkpoint.py  the `last` checkpoint's files (tensors + manifest), whatever loop wrote it
    rundir.py      the run directory's schema: names, what is written when, reading it back, loading a model

data/ uses files.py only; the loop (train/), viz/ and the CLI use rundir.py and checkpoint.py. Nothing here
imports train/ or viz/.
"""
