"""Identifiers that no header carries, found in free text: e-mail addresses, phone numbers (phonenumbers),
dates, record numbers and other long ids, street addresses (usaddress), names of people written with a cue
(a title, a role, post-nominal letters from nameparser's list, a DICOM `Family^Given` form) and capitalised
runs that probablepeople reads as a person's name.

The detectors run on the text's NFKC form (full-width digits and letters as ASCII) and their spans are mapped
back to the original text. Numbers of radiology (units, DICOM series and image numbers, dimensions, clock times)
are no ids. Libraries are imported on first use: this module is imported by every reader process, which never
redacts.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterator

from radretrieve.archive.deid.vocabulary import AFTER_TITLE_STOP, EPONYMS, NOT_NAMES, REPORT_WORDS

Span = tuple[int, int]

PHONE_REGIONS = ("US", "GB")  # numbers without a country code are read as these countries' numbers
MIN_PHONE_DIGITS = 7

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+%-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}(?![\w-])")


def emails(text: str) -> Iterator[Span]:
    for m in _EMAIL.finditer(text):
        yield m.span()


def phones(text: str) -> Iterator[Span]:
    """Phone numbers as libphonenumber reads them (Leniency.POSSIBLE: any number of a plausible length for the
    region, since made-up and new numbers are still identifiers), extensions included."""
    if sum(c.isdigit() for c in text) < 7:
        return
    from phonenumbers import Leniency, PhoneNumberMatcher

    for region in PHONE_REGIONS:
        for match in PhoneNumberMatcher(text, region, leniency=Leniency.POSSIBLE):
            if sum(c.isdigit() for c in match.raw_string) >= MIN_PHONE_DIGITS and not _measurement(
                text, match.start, match.end
            ):  # "1961" is a possible short number; "1024 x 1024" a matrix
                yield match.start, match.end


_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DAY = r"(?:[0-2]?\d|3[01])(?:st|nd|rd|th)?"
_UNITS = r"(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth)"
# a day spelled out ("the twenty-third of April 1961"): only in forms with a month and a year ("second may")
_DAY_WORDS = (
    rf"(?:(?:twenty|thirty)[\s\-]?first|twenty[\s\-]?{_UNITS}|{_UNITS}|tenth|eleventh|twelfth|thirteenth|"
    r"fourteenth|fifteenth|sixteenth|seventeenth|eighteenth|nineteenth|twentieth|thirtieth)"
)
_DAY_Y = rf"(?:{_DAY}|{_DAY_WORDS})"
_YEAR = r"(?:1[89]\d\d|2[01]\d\d|'\d\d)"
_NUM_SEP = r"\s?[-/.]\s?"
_NOT_UNIT = r"(?!\s*(?:mm|cm|m|%|x|mgy|kv|ms|hu|ml)\b)"
_DATE_FORMS = "|".join(
    [
        rf"{_DAY_Y}[\s\-./]*(?:of\s+)?{_MONTH}[\s,\-./]*{_YEAR}",  # 31 Jan 1970, 31-JAN-70, 31st of January 1970
        rf"{_MONTH}[\s\-./]*(?:the\s+)?{_DAY_Y},?[\s\-./]*{_YEAR}",  # January 31, 1970; May the first, 1970
        rf"{_YEAR}[\s\-./]*{_MONTH}[\s\-./]*{_DAY}",  # 1970 Jan 31
        rf"{_MONTH}\s+{_DAY}{_NOT_UNIT}",  # Jan 31 (no year)
        rf"{_DAY}\s+(?:of\s+)?{_MONTH}(?![a-z])",  # 31 January (no year)
        rf"{_MONTH}[\s,]+(?:1[89]|2[01])\d\d",  # January 1970
        r"(?:1[89]|2[01])\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])",  # 19700131
        rf"\d{{1,2}}{_NUM_SEP}\d{{1,2}}{_NUM_SEP}(?:\d{{4}}|\d{{2}})",  # 31/01/1970, 01-31-70, 31.1.1970
        rf"(?:1[89]|2[01])\d\d{_NUM_SEP}\d{{1,2}}{_NUM_SEP}\d{{1,2}}",  # 1970-01-31
        r"(?:0?[1-9]|1[0-2])/(?:1[89]|2[01])\d\d",  # 01/1970
    ]
)
_DATES = re.compile(rf"(?<![\w.])(?:{_DATE_FORMS})(?![\w])", re.IGNORECASE)


def _plausible_numeric(s: str) -> bool:
    """A numeric date's day and month are in range ("12.5.10" a date, "45.2.13" not)."""
    parts = [int(p) for p in re.findall(r"\d+", s)]
    if len(parts) != 3:
        return True
    a, b, c = parts
    if a > 31:  # year first
        return 1 <= b <= 12 and 1 <= c <= 31
    return 1 <= a <= 31 and 1 <= b <= 31 and (a <= 12 or b <= 12)


_ROMAN_MONTH = r"(?:XII|XI|IX|X|VIII|VII|VI|IV|V|III|II|I)"
# Roman months, upper case only ("23 IV 1961", "23.IV.1961", "1961-IV-23"; "iv" is intravenous)
_ROMAN_DATES = re.compile(
    rf"(?<![\w.])(?:{_DAY}[\s\-./]+{_ROMAN_MONTH}[\s\-./]+{_YEAR}|{_YEAR}[\s\-./]+{_ROMAN_MONTH}[\s\-./]+{_DAY})(?!\w)"
)
# CJK dates: 1961年4月23日, 4月23日 (after NFKC, full-width digits are ASCII ones)
_CJK_DATES = re.compile(r"(?<!\d)(?:\d{2,4}\s*年\s*)?\d{1,2}\s*月\s*\d{1,2}\s*日|(?<!\d)\d{2,4}\s*年\s*\d{1,2}\s*月")


def dates(text: str) -> Iterator[Span]:
    for m in _DATES.finditer(text):
        if _plausible_numeric(m.group()):
            yield m.span()
    for pattern in (_ROMAN_DATES, _CJK_DATES):
        for m in pattern.finditer(text):
            yield m.span()


# A token of letters and digits joined by - / # _ (or a space between digits): "MRN-0042-77", "123 45 6789".
_TOKEN = re.compile(r"(?<![\w.])[A-Za-z0-9]+(?:(?:[-/#_:]|(?<=\d) (?=\d))[A-Za-z0-9]+)*(?![\w])")
_DIMENSIONS = re.compile(r"\d+(?:\.\d+)?(?:x\d+(?:\.\d+)?)+[a-z]*", re.IGNORECASE)  # 512x512, 12x10x8mm
MIN_ID_DIGITS = 5  # a token with this many digits is a number that identifies (record, accession, SSN, zip)
_ID_LABEL = re.compile(
    r"(?<![\w])(?:mrn|mr\s?#|mr\s?no|ur\s?no|nhs|ssn|ssn#|acc|accession|record|chart|encounter|visit|account|"
    r"insurance|policy|member|patient\s?id|pt\s?id|hospital\s?(?:number|no)|id|fin|csn)"
    r"(?:\s*(?:number|no\.?|num|#))?\s*[:#=.]?\s*(?=[A-Za-z0-9]*\d)([A-Za-z0-9][A-Za-z0-9\-/_.]{2,})",
    re.IGNORECASE,
)


# Numbers of radiology that are no ids: a number with a unit after it ("12000 mm3", "12345 mGy*cm"), a
# dimension ("1024 x 1024"), a clock time ("10:32:15": times are kept), and digits (or an image fraction,
# "112/245") after a DICOM or measurement word ("Series 10002", "Se 3 Im 112/245", "DLP 12345").
_UNIT_AFTER = re.compile(
    r"\s*(?:mm[23²³]?|cm[23²³]?|ml|cc|l|µl|ul|mgy(?:\s*[*·x\-.]?\s*cm)?|gy|kv|kvp|mas|ma|ms|msec|sec|min|hz|khz|"
    r"mhz|hu|mbq|gbq|mci|kbq|kg|mg|g|mm/s|cm/s|m/s|px|pixels?|voxels?|%|mm2/s|s/mm2)(?![^\W\d_])",
    re.IGNORECASE,
)
_MEASURE_WORD = re.compile(
    r"(?<![^\W\d_])(?:series|ser|se|images?|im|img|slices?|sl|frames?|instances?|inst|acquisitions?|acq|"
    r"echo|phase|matrix|volume|vol|dlp|ctdi|ctdivol|kvp|kv|mas|ma|hu|fov|te|tr|ti|b|b-value|dose|thickness|"
    r"count|counts|mbq|projections?|views?)\s*[:=#]?\s*$",
    re.IGNORECASE,
)
_DIMENSION_SPACED = re.compile(r"\d+(?:\.\d+)?(?:\s*[x×*]\s*\d+(?:\.\d+)?)+\s*[a-z]*", re.IGNORECASE)
_CLOCK = re.compile(r"(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d)?")


def _measurement(text: str, start: int, end: int) -> bool:
    """text[start:end] is a number of radiology, not an id (see above)."""
    token = text[start:end]
    if _DIMENSION_SPACED.fullmatch(token) or _CLOCK.fullmatch(token):
        return True
    if not re.fullmatch(r"\d+(?:/\d+)?", token):  # letters or separators: an id's shape
        return False
    return _UNIT_AFTER.match(text, end) is not None or _MEASURE_WORD.search(text, max(0, start - 24), start) is not None


def record_numbers(text: str) -> Iterator[Span]:
    """Record numbers, accession numbers, SSN-like and other long ids: any token with five digits or more
    (measurements with a decimal point, dimensions such as 512x512, times and numbers of radiology aside:
    `_measurement`), and any token with a digit after a label such as MRN, SSN, Acc, ID."""
    for m in _TOKEN.finditer(text):
        token = m.group()
        if sum(c.isdigit() for c in token) >= MIN_ID_DIGITS and not _DIMENSIONS.fullmatch(token):
            if not _measurement(text, m.start(), m.end()):
                yield m.span()
    for m in _ID_LABEL.finditer(text):
        yield m.start(1), m.start(1) + len(m.group(1).rstrip("./-_"))


_STREET_START = re.compile(r"(?<![\w.])\d{1,6}[A-Za-z]?(?:\s+[A-Z][\w'.\-]*){1,5}")
MAX_ADDRESS_TOKENS = 14  # house number to ZIP code: "42 N Elm Street Apt. 3, Saint Louis Park, MN 55426-1234"
_PO_BOX = re.compile(r"(?<![\w])P\.?\s?O\.?\s+Box\s+\d+", re.IGNORECASE)
_ADDRESS_LABELS = frozenset(
    {
        "AddressNumber",
        "AddressNumberPrefix",
        "AddressNumberSuffix",
        "StreetName",
        "StreetNamePreDirectional",
        "StreetNamePreModifier",
        "StreetNamePreType",
        "StreetNamePostDirectional",
        "StreetNamePostModifier",
        "StreetNamePostType",
        "OccupancyType",
        "OccupancyIdentifier",
        "SubaddressIdentifier",
        "SubaddressType",
        "PlaceName",
        "StateName",
        "ZipCode",
        "USPSBoxType",
        "USPSBoxID",
    }
)


def _street_type_at(words: list[str]) -> int | None:
    """Index of the first capitalised street type ("Street", "Ave.", "Lane") among `words`, after a name
    ("2 Views" is no address)."""
    from usaddress import STREET_NAMES

    for i, word in enumerate(words[2:], start=2):  # a number, a name, then the type: "42 Elm Street"
        bare = word.rstrip(".,").lower()
        if word[:1].isupper() and bare in STREET_NAMES:
            return i
    return None


def addresses(text: str) -> Iterator[Span]:
    """Street addresses: a house number, capitalised words and a street type (usaddress's list) start one;
    usaddress's tagger then says how far it goes (unit, city, state, ZIP code)."""
    for m in _PO_BOX.finditer(text):
        yield m.span()
    pos = 0
    while (m := _STREET_START.search(text, pos)) is not None:
        pos = m.start() + 1
        words = list(re.finditer(r"\S+", m.group()))
        at = _street_type_at([w.group() for w in words])
        if at is None:
            continue
        end = _address_end(text, m.start(), m.start() + len(words[at].group().rstrip(",;")) + words[at].start())
        yield m.start(), end
        pos = end


def _address_end(text: str, start: int, street_end: int) -> int:
    """Where the address that starts at `start` ends, by usaddress's labels of the words that follow."""
    import usaddress

    window = text[start : start + 160].split("\n\n")[0]
    try:
        tagged = usaddress.parse(window)
    except Exception:  # noqa: BLE001 - the tagger may fail on odd text: the street line still goes
        tagged = []
    end, cursor = start, start
    for token, label in tagged[:MAX_ADDRESS_TOKENS]:
        at = text.find(token, cursor)
        if at < 0 or label not in _ADDRESS_LABELS or "\n" in text[cursor:at]:
            break
        if label == "PlaceName" and text[cursor - 1 : cursor] == ".":  # "42 Elm Street. Findings": a new sentence
            break
        cursor = at + len(token)
        end = at + len(token.rstrip(",.;"))
        if label == "ZipCode":  # the last part of an address
            break
    return max(end, street_end)


# -- names -------------------------------------------------------------------------------------------------
_TITLES = r"(?:dr|drs|doctor|mr|mrs|ms|miss|mx|prof|professor|sir|dame|nurse|sister)\.?"
_ROLES = (
    r"(?:(?:electronically\s+)?(?:signed|dictated|reported|read|reviewed|verified|transcribed|interpreted|"
    r"approved|authorised|authorized|performed|ordered|requested|referred|seen|examined|scanned|entered)\s+by|"
    r"discussed\s+with|d/w|spoke\s+(?:to|with)|communicated\s+to|called\s+to|relayed\s+to|conveyed\s+to|"
    r"reported\s+to|notified|paged|(?:technologist|radiographer|sonographer|tech)(?=\s+[A-Z])|"
    r"(?:referring|attending|ordering|requesting|reporting|reading|consulting|primary\s+care)?\s*"
    r"(?:physician|doctor|clinician|provider|radiologist|consultant|surgeon|resident|fellow|registrar|"
    r"technologist|technician|radiographer|sonographer|nurse|tech|pcp|gp)\s*[:\-]|"
    r"(?:patient|pt|name|patient\s+name|cc|copy\s+to|contact|next\s+of\s+kin|nok|guardian|mother|father|"
    r"husband|wife|son|daughter|partner|referrer|referred\s+from|author|signed|dictated|reader)\s*[:\-])"
)
_CUE = re.compile(rf"(?<![\w])(?:({_TITLES})(?![\w])[ \t]*|{_ROLES}(?:(?<=[:\-])|(?![\w]))\s*[:\-]?\s*)", re.IGNORECASE)
_MODALITY_TITLES = frozenset({"MR", "MS"})  # "MR - ADC map", "MS plaques": a modality or a disease, no title
_PARTICLES = frozenset({"van", "von", "der", "den", "de", "da", "del", "della", "di", "du", "le", "la", "bin", "al"})
_WORD = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*\.?|,")
_PN_PART = r"[^\W\d_](?:[^\W\d_]|['’\-])*"
_PN = re.compile(rf"(?<![\w^]){_PN_PART}\^{_PN_PART}(?:\^(?:{_PN_PART})?)*")  # DOE^JOHN, O'NEIL^MARY-KATE^^DR
MAX_NAME_WORDS = 4


def _name_like(word: str, after_title: bool = False) -> bool:
    """A capitalised word that is no common word of reports; after a title or a labelled field ("Dr. Head",
    "Next of kin: Willis, Rhys") any capitalised word but a title, pronoun or heading."""
    bare = word.rstrip(".")
    if len(bare) == 1:  # an initial
        return bare.isupper()
    lower = bare.lower()
    if after_title:
        return bare[0].isupper() and lower not in AFTER_TITLE_STOP
    return bare[0].isupper() and lower not in NOT_NAMES and lower not in REPORT_WORDS


def _name_after(text: str, pos: int, after_title: bool = False) -> Span | None:
    """The name that starts at `pos` (after a cue): capitalised words, initials and particles, "Last, First"."""
    end, last, count = None, pos, 0
    for m in _WORD.finditer(text, pos):
        if text[last : m.start()] not in ("", " ", "  ") or count >= MAX_NAME_WORDS:
            break  # a line break, a tab, a wider gap or punctuation between words: the name is over
        word, last = m.group(), m.end()
        if word == ",":
            if count != 1:
                break
            continue
        if _is_postnominal(word.rstrip("."), _postnominals()) and count:
            break  # "Kelley, MD": the letters after the name are not part of it
        if not (_name_like(word, after_title) or (word.lower() in _PARTICLES and (count or after_title))):
            break
        end, count = m.end(), count + 1
        if word.endswith(".") and len(word) > 2:  # "Hans." ends a sentence (an initial "A." does not)
            break
    if end is None:
        return None
    while text[end - 1] in ".,":  # "Dr. Smith." ends a sentence: the full stop stays
        if text[end - 1] == "." and len(text[pos:end].split()[-1].rstrip(".")) == 1:
            break  # an initial's full stop belongs to the name
        end -= 1
    return pos, end


@functools.lru_cache(maxsize=1)
def _postnominals() -> frozenset[str]:
    """Post-nominal letters (MD, DO, PhD, RN, ...) from nameparser's list, and radiology's own."""
    from nameparser.config import CONSTANTS

    extra = {"frcr", "frcpc", "facr", "mbbs", "mbchb", "frcs", "frcp", "rt", "rdms", "rvt", "pa-c", "np", "aprn"}
    return frozenset(CONSTANTS.suffix_acronyms) | frozenset(extra)


def _is_postnominal(word: str, posts: frozenset[str]) -> bool:
    """ "MD", "FRCR", "PhD": in the list and written with capitals after the first letter ("Apr." is a month)."""
    return word.lower() in posts and word[0].isupper() and any(c.isupper() for c in word[1:])


def _name_before(text: str, end: int) -> Span | None:
    """The name that ends at `end` (before post-nominal letters, "Jane Smith, MD, PhD"): up to four words
    written in title case or initials (upper-case text such as descriptions is left to the other cues)."""
    words = list(re.finditer(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*\.?", text[max(0, end - 80) : end]))
    offset = max(0, end - 80)
    start = None
    for m in reversed(words):
        word = m.group().rstrip(".")
        if start is None and _is_postnominal(word, _postnominals()):
            end = offset + m.start()  # "Smith, MD, PhD": MD is one more post-nominal
            continue
        tail = text[offset + m.end() : start if start is not None else end]
        if tail.strip(" ,") or not _name_like(m.group()) or not (_titlecase(word) or len(word) == 1):
            break
        start = offset + m.start()
        if text[start:end].count(" ") >= MAX_NAME_WORDS:
            break
    if start is None:
        return None
    return start, len(text[:end].rstrip(" ,"))


def names(text: str) -> Iterator[Span]:
    """Names written with a cue before (a title or role: "Dr. A. Smith", "signed by Jane Smith", "Patient:
    SMITH, Jane"), post-nominal letters after ("Jane Smith, MD"), or in DICOM form ("SMITH^JANE"); then every
    other occurrence of a found name's words (eponyms such as "Parkinson" excepted)."""
    found: list[Span] = []
    for m in _CUE.finditer(text):
        if m.group(1) in _MODALITY_TITLES:
            continue
        strong = bool(m.group(1)) or m.group().rstrip().endswith(":")  # "Dr.", "Referring physician:"
        span = _name_after(text, m.end(), after_title=strong)
        if span is not None and (m.group(1) or not _eponym_use(text, span)):
            found.append(span)
    posts = _postnominals()
    for m in re.finditer(r"(?<=[^\W\d_])(,?\s+)([A-Za-z][A-Za-z\-]{0,5})\.?(?![\w])", text):
        if _is_postnominal(m.group(2), posts):
            span = _name_before(text, m.start(1))
            if span is not None:
                found.append(span)
    found += [_extend_pn(text, m.start(), m.end()) for m in _PN.finditer(text)]
    yield from found
    yield from _repeats(text, found)


def _extend_pn(text: str, start: int, end: int) -> Span:
    """A DICOM name whose last component has more words ("GOUGH^JUAN FRANCISCO")."""
    for _ in range(2):
        m = re.match(r" ([^\W\d_]+)", text[end:])
        if m is None or not m.group(1).isupper() or m.group(1).lower() in NOT_NAMES:
            break
        end += m.end()
    return start, end


def _eponym_use(text: str, span: Span) -> bool:
    """A role cue before an eponym and a lower-case or report word ("patient: Crohn disease", "Patient: Crohn
    Disease", "reported to Paget's") is no name; after a title ("Dr. Parkinson") it is."""
    words = [w.strip(".,").lower() for w in text[span[0] : span[1]].split()]
    if not any(w in EPONYMS for w in words) or not all(w in EPONYMS or w in REPORT_WORDS for w in words):
        return False
    if words[-1] not in EPONYMS:  # "Patient: Crohn Disease": the report word says what the eponym names
        return True
    after = text[span[1] : span[1] + 12].lstrip(" ")
    return after[:1].islower() or after[:1] in "'’-"


@functools.lru_cache(maxsize=1)
def _never_repeated() -> frozenset[str]:
    """Words of a found name that are not looked for elsewhere: eponyms, report words, post-nominals."""
    return EPONYMS | NOT_NAMES | REPORT_WORDS | _postnominals()


def _repeats(text: str, found: list[Span]) -> Iterator[Span]:
    """Every other occurrence of the words of the names found (a surname repeated without its cue)."""
    stop = _never_repeated()
    words = {w.strip(".,") for s, e in found for w in re.split(r"[\s,^]+", text[s:e])}
    words = {w for w in words if len(w) >= 2 and w.lower() not in stop}
    if not words:
        return
    alternation = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w])(?:{alternation})(?![\w])", re.IGNORECASE)
    for m in pattern.finditer(text):
        if m.group()[0].isupper():  # "Mark" the name, not "mark" the verb
            yield m.span()


_ANY_WORD = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*")
MAX_BARE_WORDS = 3
MAX_CUED_WORDS = 4  # after a cue word: "Patient María Del Carmen Stokes"


def _titlecase(word: str) -> bool:
    """ "Anna", "McLeod", "O'Brien": a capital first and a small letter after; not an acronym ("CT")."""
    return word[0].isupper() and any(c.islower() for c in word[1:])


def _titlecase_runs(text: str) -> Iterator[tuple[int, int, bool]]:
    """Runs of capitalised words with one space between them, after the cue or report words that open a run
    ("Patient Anna Kowalski", "Pt John Smith", "Referring Jan Nowak": the cue is no part of the name and must
    not make the run a report phrase); with whether a cue word opened it. Two or three words, four after a cue."""
    run: list[re.Match[str]] = []
    for m in [*_ANY_WORD.finditer(text), None]:
        if m is not None and _titlecase(m.group()) and (not run or text[run[-1].end() : m.start()] == " "):
            run.append(m)
            continue
        cued = False
        while run and _known(run[0].group(), _RUN_OPENERS):
            cued = cued or _known(run[0].group(), _CUE_WORDS)
            run = run[1:]
        if 2 <= len(run) <= (MAX_CUED_WORDS if cued else MAX_BARE_WORDS):
            yield run[0].start(), run[-1].end(), cued
        run = [m] if m is not None and _titlecase(m.group()) else []


def bare_names(text: str) -> Iterator[Span]:
    """Names without a cue ("Anna Kowalski tolerated the procedure"): capitalised runs of two or three words,
    none a word of reports or descriptions (`REPORT_WORDS`, `NOT_NAMES`) and not all eponyms, that
    probablepeople's tagger reads as a person (transliterated first: it was trained on ASCII names); after a
    cue word written without a colon ("Patient Tristan Costa tolerated", "Pt", "Referring", "Mrs") the cue
    says it is a person, so probablepeople is not asked."""
    candidates = [(a, b, cued) for a, b, cued in _titlecase_runs(text) if not _common(text[a:b].split())]
    if not candidates:
        return
    import probablepeople
    from anyascii import anyascii

    for start, end, cued in candidates:
        if cued:
            yield start, end
            continue
        try:
            _, kind = probablepeople.tag(anyascii(text[start:end]))
        except probablepeople.RepeatedLabelError:
            continue
        if kind == "Person":
            yield start, end


def _known(word: str, words: frozenset[str]) -> bool:
    """`word` (or, double-barrelled, each of its parts: "Brown-Séquard", not "McLeod-Smith") is in `words`."""
    bare = word.lower().strip("'’-.")
    return bare in words or all(p in words for p in bare.split("-"))


_REPORT_OR_COMMON = NOT_NAMES | REPORT_WORDS
# Words that name the person after them ("Patient", "Pt", "Referring", "Mrs"), written without a colon
_CUE_WORDS = frozenset(
    """patient pt pts referring attending ordering requesting reporting consulting treating dear attn
    mother father husband wife son daughter sister brother partner guardian mr mrs ms mx miss dr drs prof
    professor sir dame nurse doctor physician radiologist technologist radiographer sonographer""".split()
)
# Words that open a run of capitalised words without being part of a name: cue words and report words
_RUN_OPENERS = _REPORT_OR_COMMON | _CUE_WORDS | frozenset("patient's name surname forename re cc kin nok".split())


def _common(words: list[str]) -> bool:
    """Words of reports: any of them a report word ("Small Baker", "Crohn Disease"), or all of them eponyms."""
    return any(_known(w, _REPORT_OR_COMMON) for w in words) or all(_known(w, EPONYMS) for w in words)


DETECTORS: tuple[Callable[[str], Iterator[Span]], ...] = (
    emails,
    phones,
    dates,
    record_numbers,
    addresses,
    names,
    bare_names,
)


_CLUSTER = re.compile(r".[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]*", re.DOTALL)


def _nfkc_with_map(text: str) -> tuple[str, list[tuple[int, int]]]:
    """`text` NFKC-normalised a letter with its accents at a time (full-width "１９６１" and "ＭＲＮ" as ASCII,
    an NFD "Mu\u0308ller" as "Müller"), and for each character of the result the original span it came from."""
    out: list[str] = []
    origin: list[tuple[int, int]] = []
    for m in _CLUSTER.finditer(text):
        norm = unicodedata.normalize("NFKC", m.group())
        out.append(norm)
        origin.extend([m.span()] * len(norm))
    return "".join(out), origin


def freetext_spans(text: str) -> list[Span]:
    """Spans of the detectors, run on the NFKC form of `text` (the detectors' patterns and libraries expect
    ASCII digits and composed letters) and mapped back to the original characters."""
    if text.isascii():
        return [span for detect in DETECTORS for span in detect(text)]
    norm, origin = _nfkc_with_map(text)
    spans = [span for detect in DETECTORS for span in detect(norm)]
    return [(origin[a][0], origin[b - 1][1]) for a, b in spans if b > a]
