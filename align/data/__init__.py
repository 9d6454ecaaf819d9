"""Training data loading: strict readers, TRL-format checks, and a report of what was kept.

Every loader returns ``(rows, LoadReport)`` (a ``datasets.Dataset``, or a list of examples or
prompts) and reads through one strict row loop (:func:`~align.data.rows.check_rows`). A bad row
raises a :class:`DataError` that names the source, the row, the field and the fix, or, with
``on_bad_row="skip"``, is counted by reason in the report; nothing is dropped without a count.
A ``holdout`` (:class:`Holdout`, :mod:`align.data.holdout`) splits one file into train and
validation by a hash of each prompt.
"""

from align.data.checks import ROLES
from align.data.errors import DataError, LoadReport, SourceRef, handle_bad
from align.data.holdout import Holdout
from align.data.prompts import ChatPrompt, load_prompts, tokenize_prompts
from align.data.rows import HELD_OUT, Several, Skip, check_rows
from align.data.sft import FORMATS, is_conversational, load_sft_dataset
from align.data.source import describe_source, iter_rows
from align.data.text import load_text_dataset

__all__ = [
    "FORMATS",
    "HELD_OUT",
    "ROLES",
    "ChatPrompt",
    "DataError",
    "Holdout",
    "LoadReport",
    "Several",
    "Skip",
    "SourceRef",
    "check_rows",
    "describe_source",
    "handle_bad",
    "is_conversational",
    "iter_rows",
    "load_prompts",
    "load_sft_dataset",
    "load_text_dataset",
    "tokenize_prompts",
]

from align.data.pairs import PAIR_RULES, to_pairs  # noqa: E402
from align.data.preferences import FORMATS as PREFERENCE_FORMATS  # noqa: E402
from align.data.preferences import RankedExample, load_preferences  # noqa: E402

__all__ += [
    "PAIR_RULES",
    "PREFERENCE_FORMATS",
    "RankedExample",
    "load_preferences",
    "to_pairs",
]
