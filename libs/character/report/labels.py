"""How the report names the evaluated methods (see `character.stages.evaluate.methods`)."""

METHOD_LABELS = {
    "base": "base model",
    "system_prompt": "system prompt",
    "steering": "activation steering",
    "dpo": "DPO only",
    "full": "full pipeline",
}
