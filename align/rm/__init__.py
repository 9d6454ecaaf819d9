"""The ``rm`` stage's library: the reward model, its ``final/`` folder contract, metrics and report card."""
