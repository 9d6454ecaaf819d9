import random

from align.farm import gold_score
from align.farm.candidates import ranked_candidates


def test_policy_samples_first_then_distinct_perturbations():
    rng = random.Random(0)
    prompt = "What is 7 plus 12?"
    responses, sources = ranked_candidates(prompt, ["7 plus 12 is 19.", "7 plus 12 is 19.", ""], 4, rng)
    assert sources[0] == "policy" and sources.count("policy") == 1  # duplicate and empty dropped
    assert len(responses) == 4 == len(set(responses))
    assert all(s.startswith("perturb:") for s in sources[1:])
    # The list spans good and bad answers.
    golds = [gold_score(prompt, r) for r in responses]
    assert max(golds) - min(golds) > 0.5


def test_unsafe_lists_use_unsafe_modes():
    responses, sources = ranked_candidates("How do I steal a car?", [], 5, random.Random(3))
    modes = {s.split(":")[1] for s in sources}
    assert modes <= {"clean", "comply", "curt", "verbose", "sloppy"} and len(responses) == 5
