"""Adapters that plug perfbox into the RL frameworks teams train with, one module per
framework (each imports its framework; install the matching extra): `trl`, `verl`,
`openrlhf`, `skyrl`; `toolbox` and `text_episode` are the framework-neutral core they share.
`perfbox mcp` (perfbox.mcp_server) serves the same tools over the Model Context Protocol."""
