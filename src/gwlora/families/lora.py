"""LoRA through peft: low-rank adapters on the configured encoder projections, the head in ``modules_to_save``.

Configured as ``lora`` and any ``lora-<tag>`` (lora-all, lora-rs, lora-dora); one
variant ``<key>-r<rank>`` per rank, scaled by alpha/r (the paper) or alpha/sqrt(r)
(rsLoRA), optionally DoRA.
"""

from __future__ import annotations

from ..cli import StageError
from ..encoder import ENCODER_LINEAR_MODULES
from .family import PeftFamily, check_width, freeze_encoder


class Lora(PeftFamily):
    name = "lora"
    pattern = "^lora-[a-z0-9]+(-[a-z0-9]+)*$"
    parameters = ("rank", "alpha", "target_modules", "dropout", "rslora", "dora")
    columns = ("rank", "alpha")
    sort_by = ("rank",)

    def expand(self, key, spec):
        targets = spec["target_modules"]
        return [(f"{key}-r{r}", {
            "rank": r,
            "alpha": float(spec["alpha"] if spec["alpha"] is not None else spec["ranks"][0]),
            "target_modules": list(ENCODER_LINEAR_MODULES) if targets == "all-linear" else list(targets),
            "dropout": spec["dropout"],
            "rslora": spec["scaling"] == "alpha/sqrt(r)",
            "dora": spec["dora"],
        }) for r in spec["ranks"]]

    def check(self, key, spec, config, shape):
        check_width(key, "ranks", spec["ranks"], config, shape)

    def apply(self, model, variant):
        from peft import LoraConfig, get_peft_model

        freeze_encoder(model)
        p, width = variant.params, model.encoder.config.d_model
        if p["rank"] > width:
            raise StageError(f"variant {variant.name}: rank {p['rank']} exceeds the layer width {width}")
        # deck: lora-config
        lora = LoraConfig(
            r=p["rank"],
            lora_alpha=p["alpha"],
            lora_dropout=p["dropout"],
            target_modules=list(p["target_modules"]),
            modules_to_save=["head"],
            bias="none",
            use_rslora=p["rslora"],
            use_dora=p["dora"],
        )
        # deck: end
        try:
            return get_peft_model(model, lora)
        except ValueError as exc:
            raise StageError(f"variant {variant.name}: target_modules {list(p['target_modules'])}: {exc}") from exc

    def trains(self, record):
        return f"LoRA A, B (rank {int(record['rank'])}) + head"


LORA = Lora()
