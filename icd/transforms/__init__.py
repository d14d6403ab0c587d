"""Model transforms, torchao style: ``optimize_(encoder, config)`` with one config class per method."""
