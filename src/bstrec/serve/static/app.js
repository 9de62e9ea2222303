// The bstrec page: plain DOM code, no framework, no network beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
const draft = []; // movies of the history being built, oldest first
let health = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  // text goes in as text nodes: titles come from data files, never as HTML
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

async function api(path, options = {}) {
  const res = await fetch(path, {
    headers: { "content-type": "application/json" },
    ...options,
  });
  let body = null;
  try { body = await res.json(); } catch { /* a body that is not JSON */ }
  if (!res.ok) {
    const msg = body && body.detail ? body.detail : `${res.status} ${res.statusText}`;
    throw new Error(msg);
  }
  return body;
}

function showError(err) {
  const box = $("error");
  if (err) {
    box.textContent = err.message || String(err);
    box.hidden = false;
  } else {
    box.hidden = true;
  }
}

function movieLine(m) {
  const year = m.year ? ` (${m.year})` : "";
  // MovieLens titles already end in "(year)"; do not print it twice
  const title = m.year && m.title.endsWith(`(${m.year})`) ? m.title.slice(0, -7) : m.title;
  return el("span", { class: "movie" },
    el("span", { class: "title" }, title), el("span", { class: "year" }, year),
    el("span", { class: "genres" }, m.genres.join(" · ")));
}

// ---------------------------------------------------------------- header
async function loadHealth() {
  try {
    health = await api("/health");
    $("health").textContent = `${health.model} (${health.task}) on ${health.data_set}: ` +
      `${health.n_users.toLocaleString()} users, ${health.n_movies.toLocaleString()} movies`;
    // readable names in a natural order (occupations by name, "Under 18" first), as
    // the server lists them; the value sent back is the data's own code
    const box = $("features");
    for (const f of health.user_feature_choices) {
      const select = el("select", { id: `feat-${f.name}`, "data-feature": f.name },
        el("option", { value: "" }, "not given"),
        ...f.choices.map((c) => el("option", { value: c.value }, c.label)));
      box.append(el("label", { for: `feat-${f.name}` }, f.label), select);
    }
    box.hidden = $("features-note").hidden = health.user_feature_choices.length === 0;
    renderDraft(); // a rating model asks for stars
  } catch (err) {
    $("health").textContent = "server unreachable";
    showError(err);
  }
}

// ---------------------------------------------------------------- search
async function search(q) {
  const list = $("search-results");
  try {
    const res = await api(`/movies?q=${encodeURIComponent(q)}&limit=10`);
    list.replaceChildren(...res.movies.map((m) => el("li", { "data-movie-id": m.movie_id },
      movieLine(m),
      el("button", { type: "button", class: "add", onclick: () => addMovie(m) }, "Add"))));
    if (!res.movies.length) list.append(el("li", { class: "muted" }, "no match"));
    showError(null);
  } catch (err) { showError(err); }
}

function addMovie(m) {
  if (health && draft.length >= health.max_history) {
    showError(new Error(`a history holds at most ${health.max_history} movies`));
    return;
  }
  draft.push({ ...m, stars: null });
  renderDraft();
}

// A rating model reads the person's taste from the stars they gave (the fold-in), so
// its page asks for them; a ranking model reads only what was watched, in order.
const STAR_CHOICES = [5, 4.5, 4, 3.5, 3, 2.5, 2, 1.5, 1, 0.5];

function starsSelect(m) {
  const select = el("select", {
    class: "draft-stars", "aria-label": `your stars for ${m.title}`,
    onchange: (e) => { m.stars = e.target.value ? Number(e.target.value) : null; },
  }, el("option", { value: "" }, "not rated"),
  ...STAR_CHOICES.map((v) => el("option", { value: String(v) }, `${v}★`)));
  select.value = m.stars == null ? "" : String(m.stars);
  return select;
}

function asksForStars() {
  return Boolean(health && health.task === "rating");
}

function renderDraft() {
  $("history-draft").replaceChildren(...draft.map((m, i) => el("li", {},
    movieLine(m),
    asksForStars() ? starsSelect(m) : "",
    el("button", {
      type: "button", class: "link", "aria-label": `remove ${m.title}`,
      onclick: () => { draft.splice(i, 1); renderDraft(); },
    }, "remove"))));
  $("history-empty").hidden = draft.length > 0;
  $("stars-note").hidden = !(asksForStars() && draft.length > 0);
  $("history-go").disabled = draft.length === 0;
}

// ---------------------------------------------------------------- results
// How a pick's score reads. A ranking model's score is a log-odds: only differences
// mean something, exp(a - b) being how many times likelier the model finds pick a
// than pick b as the next watch. So the page shows each pick's odds relative to the
// top pick ("match"), and the raw score in the tooltip. A rating model predicts stars.
function scoreLine(p, top, task) {
  if (task === "rating") {
    return el("span", { class: "score", title: `predicted rating ${p.score}` },
      `predicted ${p.score.toFixed(1)}★`);
  }
  const match = Math.round(100 * Math.exp(p.score - top));
  return el("span", { class: "score", title: `model score ${p.score} (a log-odds)` },
    `match ${match}%`);
}

function scoreNote(res) {
  if (!res.picks.length) return "";
  return res.task === "rating"
    ? "Best first, with the rating the model predicts you would give."
    : "Best first. Match: how likely the model finds each movie as your next watch, " +
      "compared with the first pick (100%). Hover a match for the model's raw score.";
}

function renderRecommendations(res, who) {
  $("recs-title").textContent = `Recommendations for ${who}`;
  const top = res.picks.length ? res.picks[0].score : 0;
  $("recs").replaceChildren(...res.picks.map((p) => el("li", { class: "card" },
    movieLine(p),
    scoreLine(p, top, res.task),
    p.because.length
      ? el("p", { class: "because" }, "because you watched ",
        ...p.because.flatMap((b, i) => [i ? ", " : "",
          el("em", { title: `weight ${b.weight}: this watch's share of what drove the pick` }, b.title)]))
      : "")));
  $("score-note").textContent = scoreNote(res);
  $("score-note").hidden = !res.picks.length;
  $("recs-empty").hidden = res.picks.length > 0;
  if (!res.picks.length) $("recs-empty").textContent = "Nothing left to recommend.";
  $("recent-title").textContent = res.user_id == null
    ? "Your history (newest first)" : `Recent history of ${who} (newest first)`;
  $("recent").replaceChildren(...res.history.map((w) => el("li", {},
    movieLine(w),
    w.rating != null ? el("span", { class: "stars" }, `${w.rating}★`) : "",
    w.time ? el("span", { class: "time muted" }, w.time.slice(0, 10)) : "")));
  // the heading shows only with something under it
  $("recent-title").hidden = res.history.length === 0;
}

async function recommendForUser(userId) {
  const k = $("k").value;
  try {
    const res = await api(`/users/${encodeURIComponent(userId)}/recommendations?k=${k}`);
    renderRecommendations(res, `user ${res.user_id}`);
    showError(null);
  } catch (err) { showError(err); }
}

async function recommendForHistory() {
  const user = {};
  for (const s of document.querySelectorAll("[data-feature]")) {
    if (s.value) user[s.dataset.feature] = s.value;
  }
  const body = { history: draft.map((m) => m.movie_id), k: Number($("k").value) };
  if (Object.keys(user).length) body.user = user;
  // one entry per movie, null where not rated; left out when no stars were given
  if (asksForStars() && draft.some((m) => m.stars != null)) {
    body.ratings = draft.map((m) => m.stars);
  }
  try {
    const res = await api("/recommendations", { method: "POST", body: JSON.stringify(body) });
    renderRecommendations(res, "your history");
    showError(null);
  } catch (err) { showError(err); }
}

// ---------------------------------------------------------------- wiring
document.addEventListener("DOMContentLoaded", () => {
  loadHealth();
  $("user-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("user-id").value.trim();
    if (id) recommendForUser(id);
  });
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    search($("search").value.trim());
  });
  let timer = null;
  $("search").addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => search($("search").value.trim()), 250);
  });
  $("history-go").addEventListener("click", recommendForHistory);
  $("clear").addEventListener("click", () => { draft.length = 0; renderDraft(); });
  renderDraft();
});
