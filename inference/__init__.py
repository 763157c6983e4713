"""The colocated rollout worker (engines, residency, speculation, tool cache). Not built yet:
see the "Rollout worker" issue. It will reach the tool service only through perfbox.client."""
