"""What several stages share, and no stage owns: sampling settings and answer handling
(`sampling.py`), the assistant's system prompt (`system_prompt.py`) and the persona
classifier (`classifier.py`). Stages import from here, never from each other (an
import-linter contract in pyproject.toml); nothing here imports a stage."""
