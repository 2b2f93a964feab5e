"""The pure AER algorithm: token entropy, advantages, losses and entropy-control strategies. No I/O."""
