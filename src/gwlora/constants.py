"""Facts the whole workflow shares, defined once and imported everywhere (the deck template gets them too).

Whisper's log-mel front end: 16 kHz audio, a 10 ms hop (100 frames per
second), 80 mel bins (every Whisper but large-v3), a 30 s receptive field of
3,000 frames that the convolutional stem halves to 1,500 encoder positions.
"""

from __future__ import annotations

WHISPER_SAMPLE_RATE = 16_000  # Hz: every window is resampled to it
WHISPER_HOP_LENGTH = 160  # samples per log-mel frame
WHISPER_FRAMES_PER_SECOND = WHISPER_SAMPLE_RATE // WHISPER_HOP_LENGTH  # 100
WHISPER_N_MELS = 80  # mel bins (large-v3: 128, read from the model's config where it matters)
WHISPER_CHUNK_SECONDS = 30  # the context Whisper was trained on
WHISPER_FULL_FRAMES = WHISPER_CHUNK_SECONDS * WHISPER_FRAMES_PER_SECOND  # 3000 log-mel frames
WHISPER_FULL_POSITIONS = WHISPER_FULL_FRAMES // 2  # 1500 encoder positions (the stem's stride is 2)

SPLITS = ("train", "val", "test")

INJECTION_SOURCES = ("simulated", "gwosc")  # strain with simulated signals injected, each with its SNR
AUDIO_SOURCES = ("hub", "audiofolder")  # single-channel sources whose labels come from the data
SOURCES = INJECTION_SOURCES + AUDIO_SOURCES

URL_SCHEMES = ("http", "https", "file")  # what the downloader fetches
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz", ".tar", ".zip")


def as_dict() -> dict:
    """Every constant by name (for the deck template)."""
    return {name: value for name, value in globals().items() if name.isupper()}
