"""Synthetic archives: real DICOM CT series, NIfTI MR volumes, radiographs, reports and ground-truth labels.

`synthesize(out, studies, seed)` writes one (same seed, same bytes); `radretrieve synth` is its command.
It writes files only through the public formats, so `radretrieve.archive` reads it like any other archive.
"""

from __future__ import annotations

from radretrieve.synth.generate import SynthOptions, SynthSummary, synthesize

__all__ = ["SynthOptions", "SynthSummary", "synthesize"]
