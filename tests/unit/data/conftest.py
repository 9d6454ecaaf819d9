import pytest

from tests.unit.data.helpers import make_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    """The tiny tokenizer of the data-loader tests (see helpers.make_tokenizer)."""
    return make_tokenizer()
