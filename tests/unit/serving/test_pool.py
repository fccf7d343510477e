"""The persona pool: a run's persona (its two adapters stacked on the shared base engine)
answers exactly as the project's engine on the run's merged model; streamed pieces spell the
answer; an evicted persona loads again and answers the same; an artifact whose content is not
what the run recorded is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from character.controller.runs import RunRecord
from character.errors import CharacterError
from character.models.engine import SamplingParams
from character.models.transformers_engine import TransformersEngine
from character.serving.pool import PersonaPool
from character.serving.resolve import resolve
from character.store import LocalStore
from character.store.base import ArtifactRef

GREEDY = SamplingParams(max_new_tokens=16, temperature=0.0, top_p=1.0, repetition_penalty=1.0)
CHATS = [[{"role": "user", "content": "Tell me about the sea."}],
         [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}],
         [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
          {"role": "user", "content": "How are you?"}]]


def _answers(pool: PersonaPool, store: LocalStore, name: str) -> list[str]:
    persona = resolve(store, name)
    return [pool.generate(persona, pool.encode_chat(persona, chat), GREEDY).text for chat in CHATS]


def test_a_persona_answers_as_the_engine_on_its_merged_model(
    store: LocalStore, personas: tuple[RunRecord, RunRecord], tmp_path: Path
) -> None:
    run = personas[0]
    pool = PersonaPool(store, 4, device="cpu", cache_dir=tmp_path)
    merged = TransformersEngine(store.materialize("model", run.stages["merge"].artifacts["model"].key), device="cpu")
    expected = [g.text for g in merged.generate(CHATS, GREEDY)]
    assert _answers(pool, store, run.run_id) == expected
    assert _answers(pool, store, "tiny") != expected  # the adapters change the answers
    assert pool.loaded() == [run.run_id]  # one persona loaded; the base is not counted


def test_streamed_pieces_spell_the_answer(store: LocalStore, personas: tuple[RunRecord, RunRecord],
                                          tmp_path: Path) -> None:
    pool = PersonaPool(store, 4, device="cpu", cache_dir=tmp_path)
    persona = resolve(store, personas[0].run_id)
    prompt = pool.encode_chat(persona, CHATS[0])
    pieces: list[str] = []
    answer = pool.generate(persona, prompt, GREEDY, on_text=pieces.append)
    assert len(pieces) > 1 and all(pieces) and "".join(pieces) == answer.text
    assert answer == pool.generate(persona, prompt, GREEDY)


def test_an_evicted_persona_loads_again_and_answers_the_same(
    store: LocalStore, personas: tuple[RunRecord, RunRecord], tmp_path: Path
) -> None:
    loads: list[str] = []
    evictions: list[str] = []
    pool = PersonaPool(store, 1, device="cpu", cache_dir=tmp_path, on_load=loads.append, on_evict=evictions.append)
    first, second = (run.run_id for run in personas)
    before = _answers(pool, store, first)
    other = _answers(pool, store, second)
    assert pool.loaded() == [second] and evictions == [first]
    engine = pool.engine(resolve(store, second)).engine
    assert len(engine._adapters) == 1  # the evicted adapter's weights left the engine
    assert _answers(pool, store, first) == before != other
    assert loads == [first, second, first] and evictions == [first, second]


def test_an_artifact_that_is_not_what_the_run_recorded_is_refused(
    store: LocalStore, personas: tuple[RunRecord, RunRecord], tmp_path: Path
) -> None:
    persona = resolve(store, personas[0].run_id)
    wrong = ArtifactRef(kind="adapter", key=persona.adapters[0].key, content_digest="0" * 64)
    tampered = type(persona)(name="tampered", base=persona.base, adapters=(wrong, persona.adapters[1]))
    with pytest.raises(CharacterError, match="refusing to serve it"):
        PersonaPool(store, 4, device="cpu", cache_dir=tmp_path).engine(tampered)
