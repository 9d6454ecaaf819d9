"""Load prompt lists (``{"prompt": str, ...}`` JSONL rows) for generation and evaluation."""

from __future__ import annotations

from align.data.errors import DataError
from align.data.source import iter_rows


def load_prompts(
    source: str, split: str = "train", field: str = "prompt", limit: int | None = None
) -> list[str]:
    """Read non-empty prompt strings from ``source`` (a JSONL file or anything ``iter_rows`` reads).

    Raises:
        DataError: A row without ``field``, or with an empty or non-string value (the file, row
            and field are named).
        ValueError: If no prompt was found.
    """
    prompts = []
    for location, row_no, row in iter_rows(source, split):
        value = row.get(field) if isinstance(row, dict) else None
        if not isinstance(value, str) or not value.strip():
            missing = not isinstance(row, dict) or field not in row
            seen = "missing" if missing else f"{type(value).__name__} {value!r}"
            raise DataError(
                location, row_no, field, f"expected a non-empty string, got {seen}",
                code="bad_prompt", hint="Every prompt row needs a non-empty string.",
            )
        prompts.append(value)
        if limit is not None and len(prompts) >= limit:
            break
    if not prompts:
        raise ValueError(f"{source}: no prompts found.")
    return prompts
