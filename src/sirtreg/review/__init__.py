"""Review of a run by a physician: a Likert score (the paper's Table 2, 1-5) per carried landmark.

:mod:`.landmarks` reads a run's output folder and lists what to score; :mod:`.store` keeps the
scores in ``review.sqlite`` beside the report (and exports them as CSV); :mod:`.page` builds the
review page (the report with a scoring panel); :mod:`.server` serves it on 127.0.0.1
(``sirtreg review OUTDIR``). The report file itself is never changed.
"""

from sirtreg.review.landmarks import (
    LIKERT,
    STORE_NAME,
    FloatingReview,
    ReviewFolder,
    ReviewItem,
    read_review_folder,
    review_items,
)
from sirtreg.review.server import ReviewServer, make_server
from sirtreg.review.store import Score, ScoreStore, export_csv, parse_scores

__all__ = [
    "LIKERT",
    "STORE_NAME",
    "FloatingReview",
    "ReviewFolder",
    "ReviewItem",
    "ReviewServer",
    "Score",
    "ScoreStore",
    "export_csv",
    "make_server",
    "parse_scores",
    "read_review_folder",
    "review_items",
]
