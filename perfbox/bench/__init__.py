"""perfbox's own benchmarks as library code: the rollout benchmark behind `perfbox bench
rollout` (`rollout`) and the cluster simulator that predicts it (`cluster_sim`), used by the
CLI and by the scripts in benchmarks/. Nothing in the service or the worker imports them."""
