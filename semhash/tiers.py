"""The three tiers' names (no dependencies: the CLI's options are built from them at start-up).

``exact`` the same bytes · ``near`` a copy (PDQ, :mod:`semhash.perceptual`) · ``similar`` a
look-alike (the model's code).  The search over them is :mod:`semhash.index.tiers`.
"""

from __future__ import annotations

from semhash.errors import SemhashError

TIERS = ("exact", "near", "similar")
TIER_CHOICES = ("all", *TIERS)
#: the tiers a copy is found in (``semhash duplicates`` by default)
COPY_TIERS = ("exact", "near")
#: default near-tier threshold: PDQ codes within this many of 256 bits (PDQ's recommended 31,
#: checked on the copies benchmark: docs/BENCHMARKS.md "Copies")
NEAR_THRESHOLD = 31
#: a rotated or mirrored copy (found through the query's 7 other dihedral codes) counts only
#: within min(threshold, this): beyond it the 7 extra codes find look-alikes 7x as often as
#: the image's own code (the copies benchmark: crop/rotation/pad recall fell to a third at
#: loose thresholds without it; with it every mirrored copy is still found)
DIHEDRAL_MAX = 48
#: the loosest near threshold `duplicates` takes: unrelated photos are ~128 bits apart, and
#: every pair of images within the threshold is held at once
MAX_GROUP_THRESHOLD = 64
#: images whose PDQ quality is below this are too flat to match in the near tier
MIN_QUALITY = 50


class TierError(SemhashError):
    """A tier name that is not one of :data:`TIER_CHOICES`."""


def tiers_for(tier: str) -> tuple[str, ...]:
    """``all`` -> every tier; a tier's name -> that tier only."""
    if tier == "all":
        return TIERS
    if tier not in TIERS:
        raise TierError(f"unknown tier {tier!r}: use one of {', '.join(TIER_CHOICES)}")
    return (tier,)
