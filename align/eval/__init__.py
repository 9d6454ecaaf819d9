"""The ``eval`` stage's library: policy evaluation against SFT, gold scoring, metrics, report and plots."""
