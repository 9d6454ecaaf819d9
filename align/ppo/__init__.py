"""PPO for RLHF, in small parts (OpenRLHF ``trainer/ppo_utils/``, torchtune ``rlhf/``).

The InstructGPT recipe (Ouyang et al. 2022) as laid out by Huang et al. 2024, "The N+
Implementation Details of RLHF with PPO":

- :mod:`align.ppo.rollout`: sampling through the one generation path into a ``Rollout`` (masks,
  position ids); :mod:`align.ppo.seeded_sampling`: per-row seeded sampling;
  :mod:`align.ppo.rollout_utils`: EOS truncation, the response mask, the no-EOS penalty.
- :mod:`align.ppo.models`: the four models in two memory modes and their forward passes.
- :mod:`align.ppo.experience_maker`: a rollout becomes an :class:`~align.ppo.experience.Experience`
  (:mod:`align.ppo.experience`: one batch with documented shapes, shuffled minibatches).
- :mod:`align.ppo.advantages`: pure functions: KL-shaped rewards, GAE, advantage whitening
  (masked statistics: :mod:`align.masked`).
- :mod:`align.ppo.kl`: fixed and adaptive KL-coefficient controllers.
- :mod:`align.ppo.steps`: the training backend seam (plain torch or DeepSpeed: build, backward and
  step, checkpoint, resume, finish); :mod:`align.ppo.distributed`: data parallelism and engines;
  :mod:`align.ppo.checkpoint`: exact resume.
- :mod:`align.ppo.prompt_order`: the seeded order of training prompts; :mod:`align.ppo.ptx`:
  PPO-ptx batches; :mod:`align.ppo.monitor`: held-out RM/gold/KL history and its plot.

The policy and value losses live with every other objective in :mod:`align.losses`; the loop
itself is ``stages/ppo.py``.

Shapes: ``B`` rollouts, ``P`` prompt (context) length, ``T`` padded response length. Response
tensors are right-padded, and ``response_mask`` is ``True`` on real response tokens, up to and
including the EOS, so each row's mask is a prefix (real tokens first, then padding).
"""
