"""The optimal detector as a family: a template-bank matched-filter search, set beside every trained variant.

Nothing trains: for Gaussian noise of a known PSD and signals of a known waveform
family the matched filter is the Neyman-Pearson optimal test, so its scores are the
ceiling each variant's AUC and efficiency are read against (:mod:`gwlora.matched_filter`).
It plans no training run (:meth:`MatchedFilter.expand` returns none): the workflow's
``matched_filter`` rule writes its one run, shaped like a training run's
(``runs/matched-filter/seed<first seed>/``), from :func:`matched_filter_variant`.
"""

from __future__ import annotations

import math

from ..constants import AUDIO_SOURCES
from ..errors import ConfigError
from ..variants import Variant
from .family import Family

NAME = "matched-filter"


class MatchedFilter(Family):
    name = NAME
    parameters = ("minimal_match", "max_rejections")
    latency_modes = ("base",)
    trained = False  # no training run, no learning rate, one seed

    def expand(self, key, spec):
        return []  # scored by the matched_filter rule, never trained (matched_filter_variant)

    def check(self, key, spec, config, shape):
        data = config["data"]
        if data["source"] in AUDIO_SOURCES or data["source"] == "gwosc":
            raise ConfigError(
                f"invalid config: train.variants.{key}: the matched filter needs a strain source with injections and a known PSD "
                f"(data.source simulated); data.source {data['source']} has "
                + ("no injections" if data["source"] in AUDIO_SOURCES else "a PSD estimated per stretch that the windows do not keep")
            )
        for name, test_set in config["evaluation"]["test_sets"].items():
            source = test_set.get("source", data["source"])
            if source != "simulated":
                raise ConfigError(f"invalid config: evaluation.test_sets.{name}.source: the matched filter (train.variants.{key}) "
                                  f"scores every test set and needs simulated noise with a known PSD there too (got {source})")

    def apply(self, model, variant):
        raise ConfigError(f"variant {variant.name}: the matched filter trains no model")

    def trains(self, record):
        size = record.get("bank_size")
        if size is None or (isinstance(size, float) and math.isnan(size)):
            return "nothing (a template bank)"
        return f"nothing (template bank of {int(size)})"


MATCHED_FILTER = MatchedFilter()


def matched_filter_variant(train: dict) -> Variant | None:
    """The matched filter's variant when `train.variants` (validated) configures it, else None: no lr (NaN), its bank settings."""
    spec = train["variants"].get(NAME)
    if spec is None:
        return None
    return Variant(name=NAME, family=NAME, lr=math.nan, params={k: spec[k] for k in MatchedFilter.parameters})
