"""Candidate responses for preference collection on the farm.

A ranked list for one prompt mixes responses sampled from the policy being aligned (the SFT
model, so the reward model learns the distribution PPO will show it) with *controlled
perturbations*: the clean correct answer and the demonstrator's error modes, so that every list
spans good and bad answers. Duplicates are dropped (a ranked list never holds the same text
twice), and more perturbations are drawn until the list has ``k`` distinct responses or the
modes run out.
"""

from __future__ import annotations

import random

from align.farm.demonstrator import applicable_modes, correct_response, perturb
from align.farm.world import Task, parse_task

CLEAN = "clean"


def perturbation(task: Task, mode: str, rng: random.Random) -> str:
    """A response of ``mode``: ``clean`` (a correct, concise answer) or a demonstrator mode."""
    return correct_response(task, rng) if mode == CLEAN else perturb(task, mode, rng)


def ranked_candidates(
    prompt: str, policy_samples: list[str], k: int, rng: random.Random
) -> tuple[list[str], list[str]]:
    """Up to ``k`` distinct candidates: the policy samples first, then perturbations.

    Args:
        prompt: A farm prompt.
        policy_samples: Responses sampled from the policy (may repeat, may be empty strings).
        k: Target list size (2..9).
        rng: Random source for the perturbation modes and texts.

    Returns:
        ``(responses, sources)``: ``sources[i]`` is ``policy`` or ``perturb:<mode>``.
    """
    task = parse_task(prompt)
    responses: list[str] = []
    sources: list[str] = []
    for text in policy_samples:
        if text.strip() and text not in responses and len(responses) < k:
            responses.append(text)
            sources.append("policy")
    modes = [CLEAN, *applicable_modes(task)]
    rng.shuffle(modes)
    for mode in modes:
        if len(responses) >= k:
            break
        text = perturbation(task, mode, rng)
        if text not in responses:
            responses.append(text)
            sources.append(f"perturb:{mode}")
    return responses, sources
