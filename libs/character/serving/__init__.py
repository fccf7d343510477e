"""Serving trained personas: the registry that names them, and the ways to use them.

- `registry.py`: publish a finished run as NAME:TAG, read and list published personas
  (`TrainedPersona`, `publish`, `get_persona`, `trained_personas`; owner and sharing rules).
- `export.py`: a published persona as a standard Hugging Face folder or a PEFT adapter.
- `model_card.py`: the README.md an export carries (persona, training, evaluation figures).
- `resolve.py`, `pool.py`: what a served model name stands for, and the engines that serve
  it (`oct chat`, `oct serve-personas`).
"""
