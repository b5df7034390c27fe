"""The frame-autoregressive generator: model, KV cache, sampler, training, weights."""
