"""Single-channel audio sources for the `dataset` stage: a Hugging Face dataset or a folder of WAV files.

Both builders return what :func:`gwlora.dataset.build_split` returns, a
``(datasets.Dataset, record)`` pair that :func:`gwlora.dataset.save_split`
writes and the `features` stage reads:

* columns ``strain`` (float32, ``[1, n_samples]`` at 16 kHz with
  ``n_samples = round(window_seconds * WHISPER_SAMPLE_RATE)``), ``label`` (int64, 0/1 after
  binarisation), ``snr`` (float64, NaN: not applicable to audio), plus
  ``source_id`` (where the clip came from: ``"<source split>:<row>"`` or the
  file's path relative to the folder) and ``source_label`` (the original
  label / class folder name, as a string);
* the record: ``split``, ``seed``, ``source``, ``detectors`` (``["audio"]``,
  the one channel name), ``sample_rate`` (``WHISPER_SAMPLE_RATE``), ``n_windows``, ``n_signal``
  (windows with label 1), ``data_config`` and ``label_names`` (``{0: ..., 1:
  ...}``).

Every clip is decoded, mixed to mono, resampled to 16 kHz and cut or padded to
``window_seconds`` by :mod:`gwlora.audio_clips`; the split arithmetic and the
record are in :mod:`gwlora.audio_splits`, the sources in
:mod:`gwlora.hub_source` and :mod:`gwlora.audiofolder_source`.

Which examples land in which split depends only on the source and on its
``shuffle_seed`` (default 0), never on the experiment ``seed`` (which is only
recorded), so every seed of a study sees the same train/val/test data and the
three splits never overlap:

* ``hub``: each of our splits reads one source split; splits that read the same
  source split must be given disjoint ``fractions`` of it, taken after one
  seeded shuffle of that source split;
* ``audiofolder``: the files of each class (sorted, then shuffled) are divided
  by the ``fractions``, per class (stratified), or, when the root holds split
  folders (``train/``, ``validation/``, ``test/``), each split reads its own.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from .audiofolder_source import build_audiofolder_split
from .hub_source import build_hub_split


def build_audio_split(data: dict, seed: int, split: str, cache_dir: str | Path) -> tuple[datasets.Dataset, dict]:
    """Dispatch on ``data["source"]`` (``hub`` or ``audiofolder``; validated config)."""
    if data["source"] == "hub":
        return build_hub_split(data, seed, split)
    return build_audiofolder_split(data, seed, split, cache_dir)
