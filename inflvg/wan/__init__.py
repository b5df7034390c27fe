"""A Wan-architecture block-causal backend (Self-Forcing / CausVid / LongLive family on Wan2.1)."""
