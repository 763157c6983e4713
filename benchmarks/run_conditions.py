"""The run conditions every results file records: perfbox.run_conditions (one home, shared with
`perfbox bench`)."""

from perfbox.run_conditions import conditions, file_sha256, version

__all__ = ["conditions", "file_sha256", "version"]
