"""Generated gRPC stubs of perfbox's API (checked in; regenerate with
`python -m perfbox.api.generate`)."""
