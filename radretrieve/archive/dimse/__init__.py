"""A DICOM node (a PACS) as an archive over DIMSE: C-FIND lists studies and series, C-GET or C-MOVE retrieves.

`radretrieve index dimse://CALLED_AET@HOST:PORT --out OUT` reads a node with the same code as a folder and as
a DICOMweb server: the series are listed (C-FIND, Study Root, `listing`), each series retrieved once and its
instances' headers scanned by the folder scanner as they arrive (`scan`), and each item's instances retrieved
again, only those decoded, into temporary files for `radretrieve.archive.read_item` (`fetch`). Instances have
the DICOMweb scan's virtual paths (`STUDY/SERIES/SOP.dcm`), so item ids and the incremental sync by Series
UID are the same. pynetdicom speaks DIMSE; `association` opens, bounds and always closes every association.
This package only reads; the pipeline (`pipelines.scan.scan_remote`, `pipelines.job`) runs it.
"""

from __future__ import annotations

from radretrieve.archive.dimse.source import DEFAULT_CALLING_AET, DimseSource, is_dimse, parse_source

__all__ = ["DEFAULT_CALLING_AET", "DimseSource", "is_dimse", "parse_source"]
