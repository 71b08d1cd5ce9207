"""Month names, the one table of them the identifier recognizers and date variants read.

English names, as the deny lists write dates of birth ("3 January 1994",
"Jan 3, 1994") and the labelled date recognizer reads them; abbreviations
are their first three letters (and "Sept").
"""

from __future__ import annotations

MONTHS: tuple[str, ...] = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
