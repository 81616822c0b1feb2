"""De-identification of free text: a study's header identifiers in any spelling (`header`) and identifiers
no header carries (`freetext`), as spans of the text; radretrieve.archive.redact replaces them."""
