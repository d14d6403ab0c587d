"""The stages of ``icd run``, one module each, in order:

calibrate → graph → solve → apply → transform → (re-permute → measure → accept) → measure.
"""
