"""Redaction forms, the site scrubber, series selection rules, SR reading order and `--reports` joins, in
process (no CLI): each against texts and counts written out by hand."""

from __future__ import annotations

import collections
import json

import pytest

from radretrieve.archive import scan
from radretrieve.archive.redact import PatientIds, load_scrubber, redact
from radretrieve.archive.scanner import ScanPolicy, make_policy
from radretrieve.archive.selection import SeriesFacts, build_rules, select
from radretrieve.archive.sr import read_sr_text
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.testing.dicom import (
    COMPREHENSIVE_SR,
    PLANTED_PHI,
    write_ct_series,
    write_planted_archive,
    write_sr,
)

IDS = PatientIds(
    names=frozenset({"Doe^Jane^Q"}),
    ids=frozenset({"MRN-0042-77", "7"}),  # "7": too short to find safely, left alone
    accessions=frozenset({"ACC-98765-X"}),
    birth_dates=frozenset({"19610312"}),
)
R = "[REDACTED]"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Doe^Jane^Q", R),
        ("jane doe", R),
        ("DOE, JANE", R),
        ("Jane Q Doe", R),
        ("Mrs Doe, 7 mm nodule", f"Mrs {R}, 7 mm nodule"),
        ("Doeson and Janet", "Doeson and Janet"),  # parts only as whole words
        ("id MRN-0042-77.", f"id {R}."),
        ("id mrn 0042 77", f"id {R}"),
        ("id MRN004277", f"id {R}"),
        ("acc ACC98765X", f"acc {R}"),
        ("born 19610312", f"born {R}"),
        ("born 1961-03-12", f"born {R}"),
        ("born 12/03/1961 or 03/12/1961", f"born {R} or {R}"),
        ("born 12.3.1961", f"born {R}"),
        ("born 12 March 1961", f"born {R}"),
        ("born 12th of Mar 1961", f"born {R}"),
        ("born March 12, 1961", f"born {R}"),
        ("seen 13/03/1961, 1961, 0042", f"seen {R}, 1961, 0042"),  # another day is a date too; a year, part of an id
    ],
)
def test_identifiers_are_redacted_in_the_forms_people_write_them(text, expected):
    assert redact(text, IDS) == expected


def test_the_scrubber_is_loaded_by_import_path_with_one_clear_error(tmp_path, monkeypatch):
    (tmp_path / "site_x.py").write_text("def scrub(t):\n    return t.upper()\nnot_callable = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_scrubber("site_x:scrub")("abc") == "ABC"
    for spec, words in [
        ("site_x", "module:callable"),
        ("no_such_site_module:scrub", "cannot import"),
        ("site_x:missing", "has no missing"),
        ("site_x:not_callable", "not callable"),
    ]:
        with pytest.raises(RadRetrieveError, match=words):
            load_scrubber(spec)


def _facts(**kw) -> SeriesFacts:
    base = {"sop_class": "1.2.840.10008.5.1.4.1.1.2", "modality": "CT", "image_type": (), "description": ""}
    return SeriesFacts(**(base | {"slices": 40} | kw))


def test_selection_rules_from_options_and_files(tmp_path):
    sc = _facts(sop_class="1.2.840.10008.5.1.4.1.1.7", description="Dose Report")
    assert select(sc, build_rules()).reason == "SecondaryCapture"
    assert select(sc, build_rules(include=["secondary-capture"])) is None
    assert select(sc, build_rules(include=["description=dose*"])) is None
    assert select(_facts(description="Chest 1mm"), build_rules(exclude=["description=*CHEST*"])).reason == "Excluded"
    assert select(_facts(image_type=("ORIGINAL", "PRIMARY", "SCOUT")), build_rules()).reason == "Localizer"
    assert select(_facts(slices=2, normals=((1.0, 0.0, 0.0),) * 2), build_rules()).reason == "Localizer"
    assert select(_facts(slices=2, normals=((0.0, 0.0, 1.0),) * 2), build_rules()) is None  # axial: not a scout
    assert select(_facts(modality="SEG", sop_class=""), build_rules()).reason == "Segmentation"
    toml, js = tmp_path / "rules.toml", tmp_path / "rules.json"
    toml.write_text('include = ["secondary-capture"]\nexclude = ["modality=MR"]\nscout_max_slices = 5\n')
    js.write_text(json.dumps({"include": ["secondary-capture"], "exclude": ["modality=MR"], "scout_max_slices": 5}))
    assert build_rules(rules_file=toml) == build_rules(rules_file=js) != build_rules()
    with pytest.raises(RadRetrieveError, match="FIELD=PATTERN"):
        build_rules(exclude=["colour=red"])
    js.write_text('{"includes": []}')
    with pytest.raises(RadRetrieveError, match="unknown selection key"):
        build_rules(rules_file=js)


def test_structured_report_text_in_reading_order_without_person_names(tmp_path):
    sections = [("Findings", ["first finding", "second finding"]), ("Impression", ["no change"])]
    path = write_sr(tmp_path / "sr.dcm", "1.2.3", sections, COMPREHENSIVE_SR, title="CT Report")
    text = read_sr_text(path, "sr.dcm")
    assert text == "CT Report\nFindings:\nfirst finding\nsecond finding\nImpression:\nno change"
    assert "Welby" not in text  # the observer's name (PNAME) is not report text


def test_reports_file_joins_by_study_uid_and_accession_and_options_change_selection(tmp_path):
    arch = write_planted_archive(tmp_path / "arch")
    study_c, _ = write_ct_series(tmp_path / "arch" / "c", 3, attrs={"AccessionNumber": "ACC-C-1"}, seed=3)
    reports = tmp_path / "reports.jsonl"
    rows = [{"StudyInstanceUID": study_c, "text": "by uid"}, {"accession": "ACC-C-1", "report": "by accession"}]
    reports.write_text("".join(json.dumps(r) + "\n" for r in rows))
    policy = make_policy(include=["secondary-capture"], exclude=["description=*chest*"], reports_file=reports)
    result = scan(arch.root, policy=policy)
    by_key = {s.key: s for s in result.studies}
    assert by_key[study_c].report == "by uid\n\nby accession"
    skipped = collections.Counter(e.error_type for e in result.errors if e.stage == "select")
    expected = {k: v for k, v in arch.skipped.items() if k != "SecondaryCapture"}  # the dose capture is kept now
    assert skipped == dict(expected, Excluded=1)  # and the CT chest series excluded
    dose = next(i for i in result.items if i.source == "a/dose/IM0.dcm")
    assert dose.burned_in and dose.description == "Dose Report [REDACTED]"
    assert all(PLANTED_PHI["AccessionNumber"] not in s.report for s in result.studies)
    assert scan(arch.root, policy=ScanPolicy()).studies != result.studies


def test_a_scan_in_parts_selects_and_redacts_like_a_folder_scan(tmp_path):
    """The Ray engine scans partitions apart (selection in the tasks) and merges them (reports, redaction)."""
    from radretrieve.archive.scanner import merge_scans, scan_part, walk

    arch = write_planted_archive(tmp_path / "arch")
    policy = make_policy(reports_file=arch.reports_csv)
    whole = scan(arch.root, policy=policy)
    parts = [scan_part(arch.root, walk(arch.root, sub), rules=policy.selection) for sub in ("a", "b")]
    merged = merge_scans(arch.root, parts, policy)
    assert merged.studies == whole.studies and merged.errors == whole.errors
    assert all("[REDACTED]" in s.report and "Jane" not in s.report for s in merged.studies)
