"""Models: the supported families (families/), offline loading, checkpoints assembled offline (fetch), the Encoder."""
