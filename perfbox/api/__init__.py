"""Generated gRPC stubs of perfbox's API (checked in; regenerate with
`python -m perfbox.api.generate`)."""

# Trailing metadata key of a RESOURCE_EXHAUSTED answer: how many milliseconds to wait before
# retrying (a per-client quota or a full queue). The server sets it, perfbox's clients honour it.
RETRY_DELAY_KEY = "retry-delay-ms"

# The largest gRPC message a perfbox client or server sends or takes (results are bounded
# well below it: stdout/stderr and report texts are capped).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
