#include "web/guestbook_page.h"

#include "web/guestbook_model.h"

namespace fulcrum::web::guestbook {

namespace {

// Every {{web_node}} is replaced by the escaped node name. The script reads data only through
// textContent/dataset and builds elements with createElement: no message byte is ever parsed as
// HTML. The CSP forbids any other origin and any script but this inline one.
constexpr std::string_view kPage = R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'">
<title>Guestbook</title>
<link rel="icon" href="data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 40 40'%3E%3Crect width='40' height='40' rx='8' fill='%232f6fde'/%3E%3Cpath d='M8 30h24L20 10z' fill='%23fff'/%3E%3C/svg%3E">
<style>
:root { --ink: #1d2430; --accent: #2f6fde; --paper: #f7f8fa; --line: #dde2ea; --field: #7d8796; --muted: #5d6675; --bad: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, sans-serif; color: var(--ink); background: var(--paper); }
header { padding: 16px 24px; background: white; border-bottom: 1px solid var(--line); }
header h1 { margin: 0; font-size: 1.4rem; }
main { max-width: 760px; margin: 24px auto; padding: 0 24px; }
form { display: grid; gap: 10px; background: white; border: 1px solid var(--line); border-radius: 8px; padding: 16px; }
label { font-weight: 600; font-size: .9rem; }
input, textarea { width: 100%; font: inherit; color: inherit; background: white; padding: 8px 10px; border: 1px solid var(--field); border-radius: 6px; }
textarea { min-height: 90px; resize: vertical; }
#count { justify-self: end; margin: -6px 0 0; color: var(--muted); font-size: .85rem; }
button { justify-self: start; font: inherit; font-weight: 600; color: white; background: var(--accent);
  border: 0; border-radius: 6px; padding: 8px 20px; cursor: pointer; }
button:disabled { opacity: .6; cursor: wait; }
.note { margin: 0; }
.note:empty { display: none; }
#error, #load-error { color: var(--bad); }
#status { color: var(--muted); }
ol#messages { list-style: none; padding: 0; margin: 24px 0; display: grid; gap: 12px; }
li.message { background: white; border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; }
li.message .meta { display: flex; justify-content: space-between; gap: 12px; color: var(--muted); font-size: .85rem; }
li.message .author { color: var(--ink); font-weight: 600; overflow-wrap: anywhere; }
li.message .text { margin: 6px 0 0; white-space: pre-wrap; overflow-wrap: anywhere; }
#empty { color: var(--muted); }
footer { text-align: center; color: var(--muted); padding: 24px; font-size: .9rem; }
</style>
</head>
<body>
<header><h1>Guestbook</h1></header>
<main>
<form id="post-form" autocomplete="on" novalidate>
<label for="author">Your name</label>
<input id="author" name="author" dir="auto" required maxlength="64" placeholder="Ada">
<label for="text">Message</label>
<textarea id="text" name="text" dir="auto" required maxlength="2000" aria-describedby="count" placeholder="Say hello"></textarea>
<p id="count">0 / 2000 characters</p>
<button id="post" type="submit">Post</button>
<p id="error" class="note" role="alert"></p>
<p id="status" class="note" role="status" aria-live="polite"></p>
</form>
<h2>Latest messages</h2>
<p id="load-error" class="note" role="alert"></p>
<p id="empty" hidden>No messages yet. Be the first!</p>
<ol id="messages"></ol>
</main>
<footer><span id="served-by" data-page-node="{{web_node}}">Page served by web node {{web_node}}.</span></footer>
<script>
"use strict";
const byId = (id) => document.getElementById(id);
const form = byId("post-form");
const authorInput = byId("author");
const textInput = byId("text");
const postButton = byId("post");
const counter = byId("count");
const errorLine = byId("error");
const statusLine = byId("status");
const loadError = byId("load-error");
const list = byId("messages");
const emptyLine = byId("empty");
const servedBy = byId("served-by");
const pageNode = servedBy.dataset.pageNode;
// The API names fields as the JSON does; the user knows them by their labels.
const labels = { author: "Your name", text: "Message" };
const retryFor = 30000;  // how long a post is retried through a failover before giving up

function element(tag, className, text) {
  const e = document.createElement(tag);
  e.className = className;
  e.textContent = text;
  return e;
}

function render(messages) {
  const items = messages.map((m) => {
    const li = element("li", "message", "");
    const meta = element("div", "meta", "");
    const author = element("span", "author", m.author);
    author.dir = "auto";  // right-to-left names and messages read and align as written
    meta.append(author);
    const when = element("time", "time", new Date(m.created_at).toLocaleString());
    when.dateTime = m.created_at;
    meta.append(when);
    const text = element("p", "text", m.text);
    text.dir = "auto";
    li.append(meta, text);
    return li;
  });
  list.replaceChildren(...items);
  emptyLine.hidden = items.length > 0;
}

function showAnswer(data) {
  servedBy.textContent = "Page served by web node " + pageNode + ". Last API answer: web node " +
    data.web_node + ", database node " + data.db_node + ".";
}

function say(line, text) {
  if (line.textContent !== text) {
    line.textContent = text;
  }
}

// The server's reason for a refused request, in the form's words.
async function reason(response) {
  let message = "";
  try { message = (await response.json()).error || ""; } catch (e) { /* not JSON */ }
  const field = /^(author|text) (.*)$/.exec(message);
  if (field) {
    return labels[field[1]] + " " + field[2] + ".";
  }
  return message ? message + "." : "the server answered HTTP " + response.status + ".";
}

let refreshTimer = 0;
async function load() {
  clearTimeout(refreshTimer);
  let ok = false;
  try {
    const response = await fetch("/api/messages?limit=50", { cache: "no-store", headers: { Accept: "application/json" } });
    if (response.ok) {
      const data = await response.json();
      render(data.messages);
      showAnswer(data);
      ok = true;
    } else {
      const why = response.status === 503 ? "the database is unavailable for a moment." : await reason(response);
      say(loadError, "Could not load messages: " + why + " Trying again shortly.");
    }
  } catch (e) {
    say(loadError, "Could not load messages (" + e.message + "). Trying again shortly.");
  }
  if (ok) {
    say(loadError, "");
  }
  // A failed load is tried again soon, so the list and the line come back with the network.
  refreshTimer = setTimeout(() => { if (document.hidden) { refreshTimer = setTimeout(load, 15000); } else { load(); } },
                            ok ? 15000 : 3000);
}

function count() {
  // maxlength counts UTF-16 units, so the counter does too: it stops where the box stops.
  counter.textContent = textInput.value.length + " / " + textInput.maxLength + " characters";
}

let statusTimer = 0;
function announce(text, clearAfter) {
  clearTimeout(statusTimer);
  say(statusLine, text);
  if (clearAfter) {
    statusTimer = setTimeout(() => say(statusLine, ""), clearAfter);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Sends the message once, and again only when the server answered 503 (nothing was stored):
// after its Retry-After or a doubling backoff, whichever is longer, for at most retryFor.
async function send(body) {
  const giveUp = Date.now() + retryFor;
  let backoff = 1000;
  for (;;) {
    let response;
    try {
      response = await fetch("/api/messages", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: body,
      });
    } catch (e) {
      // The request may or may not have arrived: trying again could post it twice.
      return "Could not post (" + e.message + "). Your message is still in the box; please try again.";
    }
    if (response.status === 201) {
      showAnswer(await response.json());
      return "";
    }
    if (response.status !== 503) {
      return await reason(response);
    }
    const delay = Math.max(backoff, 1000 * (Number(response.headers.get("Retry-After")) || 0));
    if (Date.now() + delay > giveUp) {
      return "The database is still unavailable, so your message was not posted. Please try again in a minute.";
    }
    announce("The database is switching to a new server; your message will be sent automatically in a few seconds.");
    await sleep(delay);
    backoff = Math.min(backoff * 2, 8000);
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const author = authorInput.value.trim();
  const text = textInput.value.trim();
  const empty = !author ? authorInput : !text ? textInput : null;
  for (const input of [authorInput, textInput]) {
    input.setAttribute("aria-invalid", input === empty ? "true" : "false");
  }
  if (empty) {
    say(errorLine, labels[empty.name] + " must not be empty.");
    empty.focus();
    return;
  }
  say(errorLine, "");
  postButton.disabled = true;
  const failed = await send(JSON.stringify({ author: author, text: text }));
  postButton.disabled = false;
  if (failed) {
    announce("");
    say(errorLine, failed);
  } else {
    textInput.value = "";
    count();
    announce("Your message was posted.", 5000);
  }
  textInput.focus();
  await load();
});

textInput.addEventListener("input", count);
window.addEventListener("online", load);
count();
load();
</script>
</body>
</html>
)HTML";

constexpr std::string_view kPlaceholder = "{{web_node}}";

}  // namespace

std::string htmlEscape(std::string_view s) {
  return replaceChars(s, {{'&', "&amp;"}, {'<', "&lt;"}, {'>', "&gt;"}, {'"', "&quot;"}, {'\'', "&#39;"}});
}

std::string pageHtml(std::string_view web_node) {
  const std::string escaped = htmlEscape(web_node);
  std::string page;
  page.reserve(kPage.size() + 2 * escaped.size());
  size_t pos = 0;
  for (size_t hit; (hit = kPage.find(kPlaceholder, pos)) != std::string_view::npos;
       pos = hit + kPlaceholder.size()) {
    page.append(kPage.substr(pos, hit - pos));
    page.append(escaped);
  }
  page.append(kPage.substr(pos));
  return page;
}

}  // namespace fulcrum::web::guestbook
