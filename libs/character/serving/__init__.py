"""Serving trained personas: the registry that names them, and the ways to use them.

- `registry.py`: publish a finished run as NAME:TAG, read and list published personas
  (`TrainedPersona`, `publish`, `get_persona`, `trained_personas`; owner and sharing rules).
- `export.py`: a published persona as a standard Hugging Face folder or a PEFT adapter.
- `model_card.py`: the README.md an export carries (persona, training, evaluation figures).
- `resolve.py`: what a served model name stands for (a published persona, a run id or a base model).
- `pool.py`: one engine per base model, persona adapters loaded on first use into a bounded LRU.
- `chat.py`: the terminal chat of `oct chat`.
- `api.py`, `server.py`, `metrics.py`: the OpenAI-compatible HTTPS server of `oct serve-personas`
  (request models and bounds, the aiohttp app, Prometheus metrics).
"""
