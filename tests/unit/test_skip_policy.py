"""The skip policy (tests/fixtures/skips.py) run on small suites of its own, in-process."""

from __future__ import annotations

import pytest

SUITE = """
import pytest

def test_passes():
    pass

def test_needs_helm():
    pytest.skip("{reason}")
"""


def _run(pytester: pytest.Pytester, reason: str) -> pytest.RunResult:
    pytester.makepyfile(test_suite=SUITE.format(reason=reason))
    return pytester.runpytest("-p", "tests.fixtures.skips", "-p", "no:cacheprovider")


def test_a_skip_for_a_missing_tool_fails_the_run_and_is_named(pytester: pytest.Pytester) -> None:
    result = _run(pytester, ".tools/bin/helm is missing: run scripts/install-helm.sh")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*skips that are not allowed*",
                                 "*test_suite.py::test_needs_helm: .tools/bin/helm is missing*"])


@pytest.mark.parametrize("reason", ["vllm not installed (GPU image only)", "vllm needs CUDA, which is not available",
                                    "a GPU is present"])
def test_vllm_and_cuda_skips_are_allowed(pytester: pytest.Pytester, reason: str) -> None:
    result = _run(pytester, reason)
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=1)


def test_a_module_level_skip_counts_too(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_module='import pytest\npytest.importorskip("no_such_module_for_oct")\n'
                                   "def test_x():\n    pass\n")
    result = pytester.runpytest("-p", "tests.fixtures.skips", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*test_module.py: could not import 'no_such_module_for_oct'*"])

