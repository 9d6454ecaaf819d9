"""PPO for RLHF, in small parts (OpenRLHF ``trainer/ppo_utils/``, torchtune ``rlhf/``).

The InstructGPT recipe (Ouyang et al. 2022) as laid out by Huang et al. 2024, "The N+
Implementation Details of RLHF with PPO":

- :mod:`align.ppo.experience`: :class:`~align.ppo.experience.Experience`, one batch of rollouts
  with documented shapes, and its shuffled minibatch iteration.
- :mod:`align.ppo.rollout_utils`: EOS truncation, the response mask, the no-EOS penalty.
- :mod:`align.ppo.advantages`: pure functions: masked statistics and whitening, KL-shaped
  rewards, GAE.
- :mod:`align.ppo.kl`: fixed and adaptive KL-coefficient controllers.

The policy and value losses live with every other objective in :mod:`align.losses`; the loop
itself is ``stages/ppo.py``.

Shapes: ``B`` rollouts, ``P`` prompt (context) length, ``T`` padded response length. Response
tensors are right-padded, and ``response_mask`` is ``True`` on real response tokens, up to and
including the EOS, so each row's mask is a prefix (real tokens first, then padding).
"""
