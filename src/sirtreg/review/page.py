"""The review page: the run's report with a panel to score each carried landmark (Likert 1-5).

The page is the report's own HTML with a style sheet added to its head and, before the end of
its body, the panel and one small script. The report file on disk is not touched: it stays a
static page without scripts. On wide screens the panel stays at the right while the report
scrolls beside it, so the pictures can be looked at while scoring. The script sends the scores
to the review server as JSON, shows what was saved, and loads another reviewer's scores when
the name changes (rows changed since the last save are kept; the last name used is remembered by the
browser). The script sends the server's token (in the form's ``data-token``) with every request, in the
header :data:`TOKEN_HEADER`.
"""

from __future__ import annotations

import html
from collections.abc import Mapping

from sirtreg.review.landmarks import LIKERT, LIKERT_SHORT, STORE_NAME, ReviewFolder, ReviewItem
from sirtreg.review.store import MAX_COMMENT_CHARS, MAX_REVIEWER_CHARS, Score

SCORES_PATH = "/api/scores"
TOKEN_HEADER = "X-Sirtreg-Token"

_STYLE = """
#review { background: #fbfbfd; border-top: 2px solid #d2d2d7; margin-top: 2em; padding: 0 1em 1em; }
#review h2 { margin-top: 0.8em; }
#review table { width: 100%; }
#review td.radio, #review th.radio { text-align: center; padding: 0.2em; width: 3.6em; }
#review td.name { white-space: nowrap; }
#review th.radio span { display: block; font-weight: normal; font-size: 0.8em; color: #6e6e73; }
#review input.comment { width: 100%; box-sizing: border-box; }
#review td.saved { color: #6e6e73; font-size: 0.85em; white-space: nowrap; }
#review .kind { color: #6e6e73; font-size: 0.85em; }
#review .bar { position: sticky; bottom: 0; background: #fbfbfd; padding: 0.6em 0; }
html, #review { scroll-padding-bottom: 4em; }  /* what is scrolled to stays above the save bar */
#review button { font-size: 1em; padding: 0.3em 1.2em; }
#review-status.ok { color: #248a3d; }
#review-status.error { color: #d70015; font-weight: bold; }
@media (min-width: 1400px) {
  body { margin-left: 1em; margin-right: 47em; }
  #review { position: fixed; top: 0; right: 0; bottom: 0; width: 44em; overflow-y: auto; margin: 0;
            border-top: none; border-left: 2px solid #d2d2d7; }
}
"""

_SCRIPT = """
(() => {
  const form = document.getElementById("review-form");
  const reviewer = document.getElementById("reviewer");
  const status = document.getElementById("review-status");
  const remembered = "sirtreg-review-reviewer";
  const token = {"__TOKEN_HEADER__": form.dataset.token};  // the server answers no request without it
  const rows = () => Array.from(form.querySelectorAll("tr.item"));
  const key = (floating, kind, landmark) => JSON.stringify([floating, kind, landmark]);
  const when = (stamp) => stamp ? stamp.slice(0, 16).replace("T", " ") + " UTC" : "";
  function show(message, ok) { status.textContent = message; status.className = ok ? "ok" : "error"; }
  function remember(name) { try { localStorage.setItem(remembered, name); } catch (error) { /* not kept */ } }
  const touched = new Set();  // rows changed since the last save: loading a reviewer's scores keeps them
  for (const kind of ["input", "change"]) {
    form.addEventListener(kind, (event) => {
      const row = event.target.closest("tr.item");
      if (row) touched.add(row);
    });
  }
  function fill(scores) {
    const byKey = new Map(scores.map((s) => [key(s.floating, s.kind, s.landmark), s]));
    for (const row of rows().filter((row) => !touched.has(row))) {
      const s = byKey.get(key(row.dataset.floating, row.dataset.kind, row.dataset.landmark));
      for (const radio of row.querySelectorAll("input[type=radio]")) {
        radio.checked = Boolean(s) && Number(radio.value) === s.score;
      }
      row.querySelector("input.comment").value = s ? s.comment : "";
      row.querySelector("td.saved").textContent = s ? when(s.scored_utc) : "";
    }
  }
  async function answer(response) {
    try { return await response.json(); } catch (error) { return {error: response.statusText}; }
  }
  async function load() {
    const name = reviewer.value.trim();
    if (!name) { fill([]); return; }
    const response = await fetch(form.dataset.api + "?reviewer=" + encodeURIComponent(name),
                                 {cache: "no-store", headers: token});
    const body = await answer(response);
    if (!response.ok) { show("could not load the scores: " + body.error, false); return; }
    fill(body.scores);
    show(body.scores.length ? `${body.scores.length} saved score(s) of ${name}` : "", true);
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = reviewer.value.trim();
    if (!name) { show("enter your name as reviewer first", false); reviewer.focus(); return; }
    const scores = [];
    for (const row of rows()) {
      const checked = row.querySelector("input[type=radio]:checked");
      const comment = row.querySelector("input.comment").value;
      if (!checked) {
        if (comment.trim()) { show(`give ${row.dataset.landmark} a score, or clear its comment`, false); return; }
        continue;
      }
      scores.push({floating: row.dataset.floating, kind: row.dataset.kind, landmark: row.dataset.landmark,
                   score: Number(checked.value), comment: comment});
    }
    if (!scores.length) { show("choose a score first", false); return; }
    let response;
    try {
      response = await fetch(form.dataset.api, {
        method: "POST", headers: {...token, "Content-Type": "application/json"},
        body: JSON.stringify({reviewer: name, scores: scores})});
    } catch (error) { show("not saved: the review server does not answer", false); return; }
    const body = await answer(response);
    if (!response.ok) { show("not saved: " + body.error, false); return; }
    remember(name);
    touched.clear();
    fill(body.scores);
    show(`saved: ${body.changed} new or changed of ${body.received} score(s)`, true);
  });
  reviewer.addEventListener("change", () => {
    remember(reviewer.value.trim());
    load().catch(() => show("could not load the scores: the review server does not answer", false));
  });
  if (!reviewer.value) {
    let name = null;
    try { name = localStorage.getItem(remembered); } catch (error) { /* none */ }
    if (name) {
      reviewer.value = name;
      load().catch(() => show("could not load the scores: the review server does not answer", false));
    }
  }
})();
""".replace("__TOKEN_HEADER__", TOKEN_HEADER)


_NOTE = ('<p class="note">Score how well each landmark carried onto the MAA CT lies on the same landmark drawn '
         "there, from the pictures of the report, on the five-point Likert scale of the paper. Scores are kept in "
         f"{STORE_NAME} beside the report; saving again changes them (earlier scores are kept in its history).</p>")

_SAVE_BAR = ('<p class="bar"><button type="submit" id="save">Save scores</button> '
             '<span id="review-status" role="status"></span></p>')


def _escape(text: object) -> str:
    return html.escape(str(text), quote=True)


def _when(stamp: str) -> str:
    """An ISO 8601 UTC time as ``YYYY-MM-DD HH:MM UTC`` (as the script shows it)."""
    return f"{stamp[:16].replace('T', ' ')} UTC" if stamp else ""


def _criteria_table() -> list[str]:
    lines = ['<table class="likert"><tr><th>score</th><th>criteria (the paper\'s Table 2)</th></tr>']
    lines += [f'<tr><td class="number">{score}</td><td>{_escape(text)}</td></tr>' for score, text in LIKERT.items()]
    lines.append("</table>")
    return lines


def _item_row(index: int, item: ReviewItem, saved: Score | None) -> str:
    cells = [f'<td class="name">{_escape(item.landmark)}</td>', f'<td class="kind">{_escape(item.kind)}</td>']
    for score, text in LIKERT.items():
        checked = " checked" if saved is not None and saved.score == score else ""
        cells.append(f'<td class="radio"><input type="radio" name="score-{index}" value="{score}"{checked} '
                     f'title="{score}: {_escape(text)}" aria-label="{_escape(item.landmark)}: score {score}"></td>')
    comment = _escape(saved.comment) if saved is not None else ""
    cells.append(f'<td><input type="text" class="comment" maxlength="{MAX_COMMENT_CHARS}" value="{comment}" '
                 f'aria-label="{_escape(item.landmark)}: comment"></td>')
    cells.append(f'<td class="saved">{_escape(_when(saved.scored_utc)) if saved is not None else ""}</td>')
    return (f'<tr class="item" data-floating="{_escape(item.floating)}" data-kind="{_escape(item.kind)}" '
            f'data-landmark="{_escape(item.landmark)}">' + "".join(cells) + "</tr>")


def review_panel(folder: ReviewFolder, *, token: str = "", reviewer: str = "",
                 saved: Mapping[ReviewItem, Score] | None = None) -> str:
    """The panel: reviewer name, Likert criteria, one table of landmarks per floating image, a save button.

    ``saved`` (the scores of ``reviewer``) are shown checked, with their comments and times; ``token`` is
    the review server's, sent by the script with its requests.
    """
    saved = saved or {}
    headings = "".join(f'<th class="radio" title="{_escape(text)}">{score}<span>{_escape(LIKERT_SHORT[score])}'
                       f"</span></th>" for score, text in LIKERT.items())
    name = (f'<p><label>Reviewer <input id="reviewer" name="reviewer" maxlength="{MAX_REVIEWER_CHARS}" '
            f'value="{_escape(reviewer)}" required></label></p>')
    form = f'<form id="review-form" autocomplete="off" data-api="{SCORES_PATH}" data-token="{_escape(token)}">'
    lines = ['<aside id="review" aria-label="landmark review">', "<h2>Review: landmark registration</h2>", _NOTE,
             form, name, *_criteria_table()]
    index = 0
    for entry in folder.floating:
        described = ", ".join(part for part in (entry.modality, entry.guidance and f"{entry.guidance} guidance")
                              if part)
        lines.append(f"<h3>Floating image {_escape(entry.id)}{f' ({_escape(described)})' if described else ''}</h3>")
        lines.append(f'<table class="scores"><tr><th>landmark</th><th>kind</th>{headings}<th>comment</th>'
                     "<th>saved</th></tr>")
        for item in entry.items:
            lines.append(_item_row(index, item, saved.get(item)))
            index += 1
        lines.append("</table>")
    lines += [_SAVE_BAR, "</form>", "</aside>"]
    return "\n".join(lines)


def review_page(folder: ReviewFolder, *, nonce: str, token: str = "", reviewer: str = "",
                saved: Mapping[ReviewItem, Score] | None = None) -> str:
    """The report with the review panel and its script (allowed by ``nonce`` in the page's content policy).

    ``token`` is the review server's: the script sends it with every request.
    """
    text = folder.report_html
    head, body = text.index("</head>"), text.rindex("</body>")
    panel = review_panel(folder, token=token, reviewer=reviewer, saved=saved)
    return (text[:head] + f"<style>{_STYLE}</style>\n" + text[head:body] + panel
            + f'\n<script nonce="{_escape(nonce)}">{_SCRIPT}</script>\n' + text[body:])
