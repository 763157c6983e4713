"""Adapters are tested against the real framework packages. .ci/run installs each where it
installs on a CPU-only machine and sets its PERFBOX_REQUIRE_<NAME>: there a missing framework
fails the run instead of skipping (the helper is tests.conftest.required_module)."""
