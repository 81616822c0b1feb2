"""PHI benchmark: identifiers planted in generated radiology reports and descriptions, redacted by exactly the
function the pipeline runs (`radretrieve.archive.redact.redact`, through its spans), scored per kind.

From a seed, Faker makes people (English, German, French and Spanish names, so accents and umlauts occur),
record numbers, dates, phone numbers, e-mail and street addresses; each report is a few radiology sentences
(anatomy, findings, eponyms, measurements, dose numbers, vertebral levels, DICOM series and image numbers,
dimensions, clock times) with identifiers planted in the phrases reports use (also after a cue word with no
colon, "Patient Anna Kowalski"; dates also with Roman months, CJK with full-width digits, a spelled-out day).
Header kinds get the study's `PatientIds` (DICOM spellings) and appear in the text in
another spelling class (order, initials, joined, case, Unicode form, transliteration, separators, leading
zeros, date format).

- recall per kind: a planted identifier counts as removed only when every letter and digit of it is inside a
  redacted span;
- precision: of the word tokens redacted, the share that belong to a planted identifier;
- vocabulary: each term of a radiology vocabulary (eponyms included) put in a sentence with no identifier;
  the share that comes out unchanged.

    python -m benchmarks.phi_recall --seed 0 --reports 800

Writes benchmarks/results/phi_recall.json and prints the table.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_json  # noqa: E402

GOALS = {"header": 1.00, "numbers": 0.99, "names": 0.95, "precision": 0.95}
HEADER_KINDS = ("header_name", "header_id", "header_accession", "header_birth_date")
NUMBER_KINDS = ("record_number", "accession_number", "ssn", "birth_date", "other_date", "phone", "email")
NAME_KINDS = ("patient_name", "staff_name", "name_without_cue")
OTHER_KINDS = ("address",)
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]  # fmt: skip

SENTENCES = [
    "There is a 3.2 x 2.1 cm spiculated mass in the right upper lobe (series 3, image 45).",
    "No acute intracranial hemorrhage, mass effect or midline shift.",
    "Chiari I malformation with cerebellar tonsillar ectopia of 7 mm.",
    "Findings are compatible with Crohn disease of the terminal ileum.",
    "Mediastinal lymphadenopathy, consistent with known Hodgkin lymphoma.",
    "Hemicord lesion at C5-C6 in keeping with Brown-Séquard syndrome.",
    "Nigrosome-1 loss, as seen in Parkinson disease.",
    "The head of the pancreas is unremarkable.",
    "Small Baker cyst in the left popliteal fossa.",
    "Hill-Sachs lesion of the humeral head.",
    "Mild degenerative change at L4-L5 with Schmorl nodes.",
    "CTDIvol 12.3 mGy, DLP 456.7 mGy-cm; 120 kVp, 512x512 matrix.",
    "Lung-RADS 2. BI-RADS 4A: biopsy recommended.",
    "Kerley B lines and small bilateral pleural effusions.",
    "Colles fracture of the distal radius with dorsal angulation.",
    "Wilson disease: T2 hyperintensity of the basal ganglia.",
    "Graves disease with enlarged extraocular muscles.",
    "Paget disease of the pelvis with cortical thickening.",
    "The liver measures 16 cm. The spleen is normal in size.",
    "Follow-up CT in 6-12 months is recommended per Fleischner guidelines.",
    "Stable 4 mm nodule in the left lower lobe.",
    "Mass in the head of the caudate, 2.4 cm, may represent a glioma.",
    "Bosniak IIF cyst of the right kidney.",
    "Normal Morison pouch, no free fluid.",
    "Volume 12000 mm3 on the 3D reconstruction; DLP 12345 mGy*cm.",
    "Series 10002, matrix 1024 x 1024, slice 10234.",
    "Key image 23/120 (Se 3 Im 112/245).",
    "Contrast injected at 10:32:15, scan at 10:33:02.",
    "Motor neuron pattern as in Lou Gehrig disease.",
    "Activity 18500 MBq; 250 x 250 mm field of view.",
]
DESCRIPTIONS = ["CT HEAD WO CONTRAST", "MRI BRAIN W/WO", "CT CHEST ABD PELVIS W CONTRAST", "XR CHEST 2 VIEWS",
                "US ABDOMEN COMPLETE", "MR L-SPINE", "CTA HEAD AND NECK", "CT Head Without Contrast",
                "MRI Brain With And Without Contrast", "XR Chest 2 Views", "US Abdomen Complete",
                "CTA Chest PE Protocol", "MR Lumbar Spine Wo", "PET CT Whole Body", "NM Bone Scan Whole Body",
                "Mammo Screening Bilateral Tomo", "Fluoro Barium Swallow", "Axial T2 FLAIR", "Sag T1 Post",
                "Cor STIR", "DWI b1000", "ADC Map", "Localizer", "Dose Report", "Bone Window 1.25mm"]  # fmt: skip
VQA_RAD = ROOT.parent / "shared" / "data" / "vqa-rad" / "vqa_rad.json"  # real clinicians' text, no identifiers
VOCABULARY = [
    "head", "mass", "Brown-Séquard", "Chiari", "Parkinson", "Hodgkin", "Crohn", "Baker", "Wilson", "Graves",
    "Paget", "Colles", "Kerley", "Fleischner", "Bosniak", "Morison", "Hill-Sachs", "Schmorl", "Smith", "Barrett",
    "Meckel", "Wilms", "Ewing", "Pancoast", "Zenker", "Schatzki", "Klatskin", "Monteggia", "Galeazzi",
    "Lisfranc", "Salter-Harris", "Dandy-Walker", "Arnold-Chiari", "Budd-Chiari", "Virchow", "Bochdalek",
    "Morgagni", "Takayasu", "Kawasaki", "Sjögren", "Hashimoto", "Cushing", "Addison", "Whipple", "Treitz",
    "Gerota", "Glisson", "Luschka", "Magendie", "Rathke", "Heschl", "Waldeyer", "Osgood-Schlatter", "Perthes",
    "Scheuermann", "Kienböck", "Segond", "Stener", "Maisonneuve", "Jefferson", "Hangman", "Chance", "Pott",
    "liver", "lung", "lobe", "nodule", "effusion", "fracture", "lesion", "cyst", "kidney", "spleen", "brain",
    "right", "left", "normal", "stable", "contrast", "enhancement", "T2", "FLAIR", "DWI", "C5-C6", "L4-L5",
    "mediastinum", "hilum", "pleura", "aorta", "carina", "femur", "tibia", "humerus", "radius", "ulna",
    "May", "March", "Will", "Mark", "Rose", "Hope", "Faith", "Grace", "Hill", "Stone", "Bone", "Head",
    "Lou Gehrig", "Series 10002", "Matrix 1024 x 1024", "image 23/120", "Se 3 Im 112/245", "10:32:15",
    "Volume 12000 mm3", "DLP 12345 mGy*cm", "Slice 10234", "18500 MBq",
]  # fmt: skip
VOCAB_CONTEXTS = ["{} was assessed on the axial images.", "Findings: {} noted.", "Impression: {}, unchanged.",
                  "Signed report mentions {} twice: {}."]  # fmt: skip


@dataclass
class Planted:
    kind: str
    start: int
    end: int


def _nfd(s: str) -> str:
    return unicodedata.normalize("NFD", s)


def _translit(s: str, rng: random.Random) -> str:
    german = {"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "ß": "ss"}
    if rng.random() < 0.5:
        return "".join(german.get(c, c) for c in s)
    return "".join(c for c in unicodedata.normalize("NFD", s) if not unicodedata.combining(c))


ROMAN = ["I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII"]
_ORD = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth", "eleventh",
        "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth", "eighteenth", "nineteenth",
        "twentieth"] + [f"twenty-{w}" for w in ["first", "second", "third", "fourth", "fifth", "sixth", "seventh",
        "eighth", "ninth"]] + ["thirtieth", "thirty-first"]  # fmt: skip
_FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


def _date_formats(y: int, m: int, d: int, rng: random.Random) -> str:
    mon = MONTHS[m - 1]
    forms = [
        f"{y}{m:02d}{d:02d}", f"{y}-{m:02d}-{d:02d}", f"{d:02d}/{m:02d}/{y}", f"{d}.{m}.{y}", f"{d:02d}.{m:02d}.{y}",
        f"{m:02d}/{d:02d}/{y}", f"{m}/{d}/{y % 100:02d}", f"{d} {mon[:3]} {y}", f"{d} {mon} {y}",
        f"{mon} {d}, {y}", f"{mon[:3]}. {d}, {y}", f"{d:02d}-{mon[:3].upper()}-{y}", f"{y} {mon[:3]} {d}",
        f"{d}{'th' if d not in (1, 2, 3, 21, 22, 23, 31) else ''} of {mon} {y}" if d not in (1, 2, 3, 21, 22, 23, 31)
        else f"{d} {mon} {y}",
        f"{d} {ROMAN[m - 1]} {y}", f"{d}.{ROMAN[m - 1]}.{y}", f"{y}年{m}月{d}日".translate(_FULL_WIDTH),
        f"{y}年{m}月{d}日", f"{_ORD[d - 1]} of {mon} {y}",
    ]  # fmt: skip
    return rng.choice(forms)


class Generator:
    """One report at a time: sentences and planted identifiers, with the header ids of its study."""

    def __init__(self, seed: int) -> None:
        from faker import Faker

        self.rng = random.Random(seed)
        self.fake = Faker(["en_US", "en_GB", "de_DE", "fr_FR", "es_ES"])
        self.fake.seed_instance(seed)
        self.us = Faker("en_US")
        self.us.seed_instance(seed + 1)

    def person(self) -> tuple[str, str, str]:
        f = self.fake
        first, last = f.first_name(), f.last_name().split()[0]
        while not last[:1].isupper():  # a particle ("de", "auch") is no surname of its own
            last = f.last_name().split()[-1]
        middle = f.first_name() if self.rng.random() < 0.5 else ""
        return first, middle, last

    def header_name(self, first: str, middle: str, last: str) -> str:
        r = self.rng
        forms = [
            f"{first} {last}", f"{last.upper()}, {first.upper()}", f"{first[0]}. {last}", f"{last} {first[0]}",
            f"{first}{last}", f"{last}^{first}^{middle}", f"{first} {middle} {last}" if middle else f"{last}, {first}",
            _nfd(f"{first} {last}"), _translit(f"{first} {last}", r), f"{last.lower()} {first.lower()}",
            f"{last}, {first[0]}.", f"{last.upper()}", f"{first.upper()} {last.upper()}",
            f"{last.lower()}{first.lower()}", f"{first[0]}.{middle[0]}. {last}" if middle else f"{first[0]}. {last}",
        ]  # fmt: skip
        return r.choice(forms)

    def header_id(self, value: str) -> str:
        r = self.rng
        core = re.sub(r"[^0-9A-Za-z]", "", value)
        digits = re.sub(r"\D", "", value)
        forms = [core, core.lower(), " ".join(re.findall(r"\d{1,3}|[A-Za-z]+", core)), digits.lstrip("0"),
                 "-".join([core[:3], core[3:]]), digits, "0" + value, value.replace("-", " / ")]  # fmt: skip
        return r.choice(forms)

    def report(self) -> tuple[str, list[Planted], object]:
        from radretrieve.archive.redact import PatientIds

        r, f = self.rng, self.fake
        first, middle, last = self.person()
        if r.random() < 0.2:  # a compound family name (Müller-Weiß), written joined or with initials too
            last = f"{last}-{self.person()[2]}"
        mrn = f"{r.choice(['MRN-', 'E', '', 'H'])}{r.randint(0, 99):02d}{r.randint(0, 999999):06d}"
        acc = f"{r.choice(['ACC', 'RAD', 'A'])}{r.randint(2015, 2026)}{r.randint(0, 99999):05d}"
        dob = f.date_of_birth(minimum_age=1, maximum_age=99)
        ids = PatientIds(
            names=frozenset({f"{last}^{first}^{middle}".rstrip("^")}),
            ids=frozenset({mrn}),
            accessions=frozenset({acc}),
            birth_dates=frozenset({dob.strftime("%Y%m%d")}),
        )
        parts: list[tuple[str, str | None]] = []  # (text, kind or None)

        def plant(template: str, kind: str, value: str) -> None:
            before, after = template.split("{}")
            parts.extend([(before, None), (value, kind), (after, None)])

        sentences = r.sample(SENTENCES, 4)
        chosen = r.sample(self._plans(first, middle, last, mrn, acc, dob), 5)
        for k, (template, kind, value) in enumerate(chosen):
            parts.append((sentences[k % len(sentences)] + " ", None))
            plant(template + " ", kind, value)
        text, planted, pos = "", [], 0
        for piece, kind in parts:
            if kind:
                planted.append(Planted(kind, pos, pos + len(piece)))
            text += piece
            pos += len(piece)
        return text, planted, ids

    def _plans(self, first, middle, last, mrn, acc, dob) -> list[tuple[str, str, str]]:
        r, f, us = self.rng, self.fake, self.us
        other_first, other_mid, other_last = self.person()
        staff_first, _, staff_last = self.person()
        other = f.date_between(start_date="-10y", end_date="today")
        street = us.street_address()
        address = f"{street}, {us.city()}, {us.state_abbr()} {us.zipcode()}"
        initial = r.choice("ABCDEFGHJKLMNPRSTW")
        staff = r.choice([f"{staff_first} {staff_last}", f"{staff_last}, {staff_first}", staff_last,
                          f"{staff_first} {initial}. {staff_last}", f"{staff_first.upper()} {staff_last.upper()}",
                          f"{staff_first[0]}. {staff_last}"])  # fmt: skip
        staff_ctx = r.choice(["Electronically signed by: {}.", "Discussed with Dr. {} by telephone.",
                              "Referring physician: {}.", "Dictated by {}, MD.", "Results called to Dr {} at 14:05.",
                              "Technologist: {}.", "Reviewed by {}, FRCR.", "Findings were discussed with {}, MD.",
                              "cc: Dr. {}.", "Reported by Prof. {}."])  # fmt: skip
        patient = r.choice(
            [
                f"{other_last}, {other_first}",
                f"{other_first} {other_last}",
                f"{other_last.upper()}^{other_first.upper()}",
                " ".join(w for w in (other_first, other_mid, other_last) if w),
            ]
        )
        patient_ctx = r.choice(["Patient: {}.", "Patient name: {}.", "Mother: {}, present during the scan.",
                                "Next of kin: {}.", "Name: {}."])  # fmt: skip
        phone = r.choice([us.phone_number(), f.phone_number(), us.phone_number()])
        ssn = r.choice([us.ssn(), us.ssn().replace("-", " "), us.ssn().replace("-", "")])
        email = r.choice([f.email(), f"{first.lower()}.{last.lower()}@{f.domain_name()}", f.company_email()])
        email = unicodedata.normalize("NFKD", email).encode("ascii", "ignore").decode()
        mrn_other = r.choice([f"{r.randint(100000, 99999999)}", f"MRN-{r.randint(10, 999)}-{r.randint(1000, 9999)}",
                              f"E{r.randint(1000000, 9999999)}", f"{r.randint(0, 999):03d} {r.randint(0, 999):03d} "
                              f"{r.randint(0, 999):03d}"])  # fmt: skip
        acc_other = f"{r.choice(['ACC', 'RAD', 'CT', ''])}{r.randint(2015, 2026)}-{r.randint(0, 999999):06d}"
        bdate = f.date_of_birth(minimum_age=1, maximum_age=99)
        return [
            (r.choice(["Patient {} was scanned supine.", "Clinical history: {}, known nodule.", "Re: {}.",
                       "Pt {} tolerated the exam."]),
             "header_name", self.header_name(first, middle, last)),
            (r.choice(["MRN {}.", "Hospital number {}.", "Patient ID: {}.", "({})"]), "header_id", self.header_id(mrn)),
            (r.choice(["Accession {}.", "Acc # {}.", "Order {}."]), "header_accession", self.header_id(acc)),
            (r.choice(["DOB {}.", "Born {}.", "Date of birth: {}."]), "header_birth_date",
             _date_formats(dob.year, dob.month, dob.day, r)),
            (patient_ctx, "patient_name", patient),
            (staff_ctx, "staff_name", staff),
            (r.choice(["MRN: {}.", "Medical record number {}.", "Chart # {}.", "Outside record {}."]),
             "record_number", mrn_other),
            (r.choice(["Outside accession {}.", "Prior accession number: {}.", "Comparison study {}."]),
             "accession_number", acc_other),
            (r.choice(["SSN {}.", "Social security number: {}.", "SSN# {}."]), "ssn", ssn),
            (r.choice(["Sister's DOB {}.", "Date of birth {}.", "Born on {}."]), "birth_date",
             _date_formats(bdate.year, bdate.month, bdate.day, r)),
            (r.choice(["Comparison: CT of {}.", "Prior MRI dated {} is available.", "Compared with {}.",
                       "Exam date {}."]), "other_date", _date_formats(other.year, other.month, other.day, r)),
            (r.choice(["Please call {} with questions.", "Pager {}.", "Reading room: {}.", "(tel. {})"]), "phone",
             phone),
            (r.choice(["Send images to {}.", "Contact: {}.", "E-mail {} for the CD."]), "email", email),
            (r.choice(["Home address: {}.", "Lives at {}.", "Address on file: {}."]), "address",
             address.replace("\n", ", ")),
            (r.choice(["{} tolerated the procedure well.", "Images reviewed with {} today.",
                       "Patient {} tolerated the exam.", "Pt {} tolerated the exam.", "Referring {} called."]),
             "name_without_cue",
             f"{other_first} {other_last}"),
        ]  # fmt: skip


def _covered(spans: list[tuple[int, int]], text: str, start: int, end: int) -> bool:
    """Every letter and digit of text[start:end] is inside a span."""
    return all(any(a <= i < b for a, b in spans) for i in range(start, end) if text[i].isalnum())


def _word_tokens(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(r"[^\W_]+", text)]


def _real_text_false_positives() -> dict:
    """Word tokens redacted in VQA-RAD's questions and answers (real clinicians' text without identifiers):
    every one is a false positive. Empty when the data is not there."""
    import json

    from radretrieve.archive.redact import identifier_spans

    if not VQA_RAD.is_file():
        return {}
    records = json.loads(VQA_RAD.read_text())
    texts = sorted({str(r["question"]) for r in records} | {str(r["answer"]) for r in records})
    tokens = redacted = 0
    for text in texts:
        spans = identifier_spans(text)
        words = _word_tokens(text)
        tokens += len(words)
        redacted += sum(1 for a, b in words if any(s < b and a < e for s, e in spans))
    return {"source": "VQA-RAD questions and answers", "texts": len(texts), "tokens": tokens, "redacted": redacted}


def run(seed: int, n_reports: int) -> dict:
    from radretrieve.archive.redact import REDACTED, identifier_spans, redact

    gen = Generator(seed)
    found: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    tp = fp = 0
    t0 = time.perf_counter()
    texts = 0
    for _ in range(n_reports):
        text, planted, ids = gen.report()
        spans = identifier_spans(text, ids)
        assert redact(text, ids).count(REDACTED) == len(spans)  # the spans are what redact replaces
        texts += 1
        for p in planted:
            hit = _covered(spans, text, p.start, p.end)
            found[p.kind][0] += hit
            found[p.kind][1] += 1
        for a, b in _word_tokens(text):
            if any(s < b and a < e for s, e in spans):
                if any(p.start <= a and b <= p.end for p in planted):
                    tp += 1
                else:
                    fp += 1
    for desc in DESCRIPTIONS:
        spans = identifier_spans(desc)
        fp += sum(1 for a, b in _word_tokens(desc) if any(s < b and a < e for s, e in spans))
    elapsed = time.perf_counter() - t0
    real = _real_text_false_positives()
    kept = 0
    lost: list[str] = []
    for term in VOCABULARY:
        for ctx in VOCAB_CONTEXTS:
            sentence = ctx.format(term, term)
            if redact(sentence) == sentence:
                kept += 1
            else:
                lost.append(term)
    recall = {k: round(v[0] / v[1], 4) for k, v in sorted(found.items())}
    counts = {k: v[1] for k, v in sorted(found.items())}
    return {
        "seed": seed,
        "reports": n_reports,
        "planted": sum(counts.values()),
        "kinds": len(counts),
        "recall": recall,
        "planted_per_kind": counts,
        "precision_tokens": round(tp / max(1, tp + fp), 4),
        "false_positive_tokens": fp,
        "vocabulary_kept": round(kept / (len(VOCABULARY) * len(VOCAB_CONTEXTS)), 4),
        "vocabulary_lost": sorted(set(lost)),
        "ms_per_report": round(1000 * elapsed / max(1, texts), 2),
        "real_text": real,
        "goals": GOALS,
    }


def table(result: dict) -> str:
    def goal(kind: str) -> str:
        if kind in HEADER_KINDS:
            return "1.00"
        if kind in NUMBER_KINDS:
            return "≥ 0.99"
        if kind in NAME_KINDS:
            return "≥ 0.95"
        return "none"

    rows = ["| kind | planted | recall | goal |", "| --- | --- | --- | --- |"]
    for kind, value in result["recall"].items():
        rows.append(f"| {kind} | {result['planted_per_kind'][kind]} | {value:.3f} | {goal(kind)} |")
    rows.append(f"| precision (word tokens redacted that were planted) | | {result['precision_tokens']:.3f} | ≥ 0.95 |")
    real = result.get("real_text") or {}
    if real:
        rows.append(f"| real text without identifiers ({real['source']}): word tokens redacted | | "
                    f"{real['redacted']} of {real['tokens']} | |")  # fmt: skip
    rows.append(f"| radiology vocabulary kept ({len(VOCABULARY)} terms × {len(VOCAB_CONTEXTS)} sentences) | | "
                f"{result['vocabulary_kept']:.3f} | |")  # fmt: skip
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reports", type=int, default=800, help="reports generated (5 identifiers each)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/phi_recall.json)")
    args = ap.parse_args(argv)
    result = run(args.seed, args.reports)
    path = write_json("phi_recall", result, args.out)
    sys.stdout.write(table(result) + f"\n\n{result['planted']} identifiers of {result['kinds']} kinds; {path}\n")


if __name__ == "__main__":
    main()
