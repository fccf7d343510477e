"""Is the judge an instrument? Its accuracy on known answers, before any figure it reads counts.

The calibration set (data/calibration/judge_traits.jsonl, README beside it) holds replies
written to express one of two named traits. A judge (`trait_judges.TraitJudge`) is asked
about each one exactly as the evaluation asks about a model's answer (`preferences.ballot`,
every order of the two traits), and scored on whether it names the expressed trait; a ballot
it leaves undecided counts as wrong. The figure: accuracy with a 95% Clopper-Pearson interval,
an exact binomial test against chance (0.5), n, and the position-bias rate (the share of its
per-order verdicts that picked the trait shown first; 0.5 is none).

Valid iff the interval lies above chance (so the judge sees traits at all) and the accuracy
is at least `FLOOR`. Why 0.70: a judge of accuracy a, wrong at random, shrinks a change in
the share of answers expressing a trait to (2a - 1) of its size. At 0.70 a real change keeps
40% of its size, so the proof preset's 160 comparisons still detect the 0.5 -> 0.8 shift that
`stats.MIN_N` is sized for (observed 0.5 -> 0.62); below it, "did not rise" is no evidence,
and a judge barely above chance on 144 items (lower bound just over 0.5 needs about 0.59)
would leave less than a fifth of any effect.

The evaluation calibrates on `Config.calibration_items` of the set (`calibration_subset`: seeded,
balanced over trait pairs and over the position of the expressed trait) so that the demo's
calibration stays under a minute; the figure's n is the subset's size. With `Config.choose_judge`
and no `judge` in the spec, it calibrates the candidates (`Subject.trait_judge_candidates`: the
channel, the embedding and the default model judge) on the same items and judges trait choices
with the most accurate one (`best_calibrated`). The winner's figure is then the largest of three
estimates, so slightly optimistic; all are in results (`judge_candidates`).

Results are cached in the run's store as record `calibrations/<digest>`, keyed by the judge's
identity (`TraitJudge.identity`: model or encoder and how it is asked) and the set's digest.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from character import stats
from character.errors import InvalidInput, NotFound
from character.stages.evaluate import preferences
from character.stats import NOT_VALID
from character.store.digest import digest_of
from character.yamldoc import parse_json

if TYPE_CHECKING:
    from character.report.results import EvaluationResults, HeadlineValue, JudgeCalibration
    from character.stages.evaluate import Config
    from character.stages.evaluate.subject import Subject
    from character.stages.evaluate.trait_judges import TraitJudge
    from character.store.base import Store

FLOOR = 0.70
"""The lowest calibration accuracy a valid judge may have (see the module docstring)."""
MAX_ITEMS = 5000
"""Most items a calibration file may hold (each costs the judge 2 ballots)."""
MAX_LINE_BYTES = 16_384
"""Longest line (one item) a calibration file may hold."""
RECORD_PREFIX = "calibrations/"
CHANCE = 0.5


@dataclass(frozen=True)
class CalibrationItem:
    """One known answer: `reply` to `message` expresses `expressed`, one of `traits`."""

    message: str
    reply: str
    traits: tuple[str, str]
    """The two traits offered, in the order the file gives (the judge sees both orders)."""
    expressed: str


def bundled_set() -> Path:
    """The calibration set shipped with the library."""
    return Path(str(resources.files("character.data") / "calibration" / "judge_traits.jsonl"))


def load_calibration_set(path: str | Path | None = None) -> list[CalibrationItem]:
    """The items of a calibration file (default: the bundled set), one JSON object a line:
    {"message", "reply", "traits": [A, B], "expressed": A}; other keys are ignored, blank lines
    skipped. At most `MAX_ITEMS` items of `MAX_LINE_BYTES` each, checked while reading; any
    problem is an `InvalidInput` located as file:line and naming the field."""
    source = Path(path).expanduser() if path is not None else bundled_set()
    if not source.is_file():
        raise NotFound(f"no such calibration file: {source}")
    items: list[CalibrationItem] = []
    with open(source, "rb") as f:
        lineno = 0
        while raw := f.readline(MAX_LINE_BYTES + 1):
            lineno += 1
            where = f"{source}:{lineno}"
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                raise InvalidInput(f"line longer than {MAX_LINE_BYTES} bytes", where=where)
            if not raw.strip():
                continue
            if len(items) == MAX_ITEMS:
                raise InvalidInput(f"more than {MAX_ITEMS} items", where=where)
            items.append(_item(raw, source, lineno))
    if not items:
        raise InvalidInput("no calibration items", where=str(source))
    return items


def _item(raw: bytes, source: Path, lineno: int) -> CalibrationItem:
    where = f"{source}:{lineno}"
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InvalidInput(f"not UTF-8 text (byte {err.start})", where=where) from None
    row = parse_json(line, str(source), first_line=lineno)
    if not isinstance(row, dict):
        raise InvalidInput(f"a line is a {type(row).__name__}, expected an object", where=where)

    def text(field: str) -> str:
        value = row.get(field)
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(f"field {field!r}: expected a non-empty string", where=where)
        return value

    traits = row.get("traits")
    if (
        not isinstance(traits, list)
        or len(traits) != 2
        or not all(isinstance(t, str) and t.strip() for t in traits)
        or traits[0] == traits[1]
    ):
        raise InvalidInput("field 'traits': expected two distinct trait words", where=where)
    expressed = text("expressed")
    if expressed not in traits:
        raise InvalidInput(f"field 'expressed': {expressed!r} is not one of the traits {traits}", where=where)
    return CalibrationItem(text("message"), text("reply"), (traits[0], traits[1]), expressed)


def set_digest(items: Sequence[CalibrationItem]) -> str:
    """The content address of a calibration set (its items, not its file's bytes)."""
    return digest_of([asdict(item) for item in items])


def calibration_subset(items: Sequence[CalibrationItem], n: int | None, seed: int) -> list[CalibrationItem]:
    """`n` of `items` (all of them when `n` is None or not smaller), drawn with `seed`: trait
    pairs in turn (a seeded order), one item a pair per round, the position of the expressed
    trait in the pair alternating between neighbouring pairs and between rounds. So every pair
    gives within one item as many as any other, and the expressed trait is listed first within
    one item of half the time (on a set balanced like the bundled one)."""
    if n is None or n >= len(items):
        return list(items)
    rng = random.Random(seed)
    cells: dict[tuple[tuple[str, ...], int], list[CalibrationItem]] = defaultdict(list)
    for item in items:
        cells[(tuple(sorted(item.traits)), item.traits.index(item.expressed))].append(item)
    for cell in cells.values():
        rng.shuffle(cell)
    pairs = sorted({pair for pair, _ in cells})
    rng.shuffle(pairs)
    order: list[CalibrationItem] = []
    round_ = 0
    while len(order) < n:
        for i, pair in enumerate(pairs):
            preferred = (i + round_) % 2
            cell = cells[(pair, preferred)] or cells[(pair, 1 - preferred)]
            if cell:
                order.append(cell.pop())
        round_ += 1
    return order[:n]


def best_calibrated(figures: Sequence[dict[str, Any]]) -> int:
    """The index of the calibration figure of highest accuracy (the first on a tie)."""
    return max(range(len(figures)), key=lambda i: (figures[i]["accuracy"] or 0.0, -i))


def calibrate(judge: TraitJudge, items: Sequence[CalibrationItem], min_n: int = stats.MIN_N) -> dict[str, Any]:
    """The judge's calibration figure on `items` (see the module docstring for the shape)."""
    ballots = [preferences.ballot(item.message, item.reply, item.traits) for item in items]
    decisions = judge.decide(ballots)
    correct = sum(d.verdict == item.expressed for d, item in zip(decisions, items, strict=True))
    found = stats.share("judge calibration accuracy", correct, len(items), "items", chance=CHANCE, min_n=min_n)
    firsts = [f for d in decisions for f in d.first_shown if f is not None]
    valid, reason = _verdict(found)
    return {
        "judge": judge.name,
        "set_digest": set_digest(items),
        "n": found.n,
        "accuracy": found.value,
        "ci_low": found.ci_low,
        "ci_high": found.ci_high,
        "p_value": found.p_value,
        "position_bias": sum(firsts) / len(firsts) if firsts else None,
        "valid": valid,
        "reason": reason,
    }


def _verdict(found: stats.Evidence) -> tuple[bool, str]:
    figure = f"calibration accuracy {found.value:.2f} [{found.ci_low:.2f}, {found.ci_high:.2f}], n = {found.n}"
    if found.underpowered:
        return False, f"{figure}: fewer than {found.min_n} items, not a calibration"
    if found.ci_low is None or found.ci_low <= CHANCE:
        return False, f"{figure}: not distinguishable from chance ({CHANCE:g})"
    assert found.value is not None
    if found.value < FLOOR:
        return False, f"{figure}: below the floor {FLOOR:.2f}"
    return True, f"{figure}: above chance ({stats.format_p(found.p_value or 0.0)}) and at least {FLOOR:.2f}"


def calibrated(
    store: Store, judge: TraitJudge, items: Sequence[CalibrationItem], min_n: int = stats.MIN_N
) -> dict[str, Any]:
    """`calibrate`, cached in `store` by (judge identity, set digest, min_n)."""
    key = RECORD_PREFIX + digest_of(
        {"judge": judge.identity(), "set": set_digest(items), "min_n": min_n, "floor": FLOOR}
    )
    cached = store.get_record(key)
    if cached is not None:
        return cached
    result = calibrate(judge, items, min_n)
    store.put_record(key, result)
    return result


# ----------------------------------------------------------------------------- in the evaluation
def judge_calibrations(subject: Subject, config: Config) -> dict[str, Any]:
    """The calibration of each judge the configured parts use, on `config.calibration_items` of
    the bundled set (cached in the run's store): `judge_calibration` for the judge of trait
    choices (preferences), and `coherence_judge_calibration` where coherence's model judge is
    another one. Where the subject has several candidate judges of trait choices (and the
    preferences part runs), each is calibrated, the best one becomes the subject's judge, and
    every candidate's figure is under `judge_candidates`."""
    items = calibration_subset(load_calibration_set(), config.calibration_items, subject.ctx.spec.seed)
    store = subject.ctx.store
    out: dict[str, Any] = {}
    if config.preferences or config.coherence:
        candidates = subject.trait_judge_candidates if config.preferences else [subject.trait_judge]
        figures = [calibrated(store, judge, items, config.min_n) for judge in candidates]
        best = best_calibrated(figures)
        subject.use_trait_judge(candidates[best])
        out["judge_calibration"] = figures[best]
        if len(candidates) > 1:
            out["judge_candidates"] = figures
    if config.coherence and subject.ctx.spec.model_judge != subject.trait_judge.name:
        out["coherence_judge_calibration"] = calibrated(store, subject.model_judge, items, config.min_n)
    return out


def mark_judged(results: EvaluationResults) -> None:
    """Give every judge-based figure of `results` (trait ratings, the own-trait share, the
    coherence win rates), and the part holding it (what the report reads), its judge's
    validity; a figure from an invalid judge says "instrument not valid" in its summary
    sentence instead of its value (`stats.Evidence.sentence`)."""
    traits = results.judge_calibration
    prefs = results.preferences
    if traits and prefs:
        prefs.validity = traits.validity
        for model in prefs.models.values():
            model.validity = traits.validity
        for found in prefs.own_trait_evidence.values():
            found.validity = traits.validity
            found.own_trait_choice = _marked(found.own_trait_choice, traits)
            found.ratings = {word: _marked(figure, traits) for word, figure in found.ratings.items()}
    if traits and results.side_by_side:
        results.side_by_side.validity = traits.validity
    coherent = results.coherence_judge_calibration or traits
    if coherent and results.coherence:
        for comparison in results.coherence.comparisons:
            comparison.validity = coherent.validity
            if comparison.evidence:
                comparison.evidence = _marked(comparison.evidence, coherent)


def _marked(figure: stats.Evidence, calibration: JudgeCalibration) -> stats.Evidence:
    return figure.model_copy(update={"validity": calibration.validity})


def guard_headline(results: EvaluationResults, headline: dict[str, HeadlineValue]) -> dict[str, HeadlineValue]:
    """The headline with the judge's calibration accuracy and validity, and each judge-based
    number replaced by "instrument not valid" where its judge is not valid."""
    traits = results.judge_calibration
    if not traits:
        return headline
    out = {**headline, "judge_calibration_accuracy": traits.accuracy, "judge_valid": traits.valid}
    judged = {"spearman_": traits, "win_rate_": results.coherence_judge_calibration or traits}
    for prefix, calibration in judged.items():
        if not calibration.valid:
            out.update({k: NOT_VALID for k in out if k.startswith(prefix)})
    return out
