"""The local lab's control plane: an ``istiod`` process serving the translator's config to every Envoy over
ADS (gRPC), and the lab's side of it (publish a snapshot, wait for the ACKs, read the sync state)."""
