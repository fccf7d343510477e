"""Shared test setup: fixtures live in tests/fixtures/ and are registered here."""

pytest_plugins = [
    "tests.fixtures.models",
    "tests.fixtures.openai_server",
    "tests.fixtures.s3",
    "tests.fixtures.security",
    "tests.fixtures.skips",  # only vLLM/CUDA tests may skip: any other skip fails the run
    "pytester",  # tests/unit/test_skip_policy.py runs small suites of its own
]
