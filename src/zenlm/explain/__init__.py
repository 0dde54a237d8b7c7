"""Explanations: attention maps and rollout, token surprisal, attributions, token vectors.

`zenlm explain` (zenlm.commands.explain) drives these; each module is usable alone.
"""
