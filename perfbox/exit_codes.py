"""Exit codes of the `perfbox` command, in one place."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # the tool ran and the kernel passed it (status OK)
    KERNEL_FAILURE = 1  # the tool ran and the kernel failed it (any non-OK result status)
    USAGE = 2  # bad command line or a request the server rejected (INVALID_ARGUMENT...)
    CONNECTION = 3  # the server could not be reached or went away
    INTERNAL = 4  # perfbox itself failed
