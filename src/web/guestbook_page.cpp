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
<style>
:root { --ink: #1d2430; --accent: #2f6fde; --paper: #f7f8fa; --line: #dde2ea; --muted: #6b7585; --bad: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, sans-serif; color: var(--ink); background: var(--paper); }
header { padding: 16px 24px; background: white; border-bottom: 1px solid var(--line); }
header h1 { margin: 0; font-size: 1.4rem; }
main { max-width: 760px; margin: 24px auto; padding: 0 24px; }
form { display: grid; gap: 10px; background: white; border: 1px solid var(--line); border-radius: 8px; padding: 16px; }
label { font-weight: 600; font-size: .9rem; }
input, textarea { width: 100%; font: inherit; padding: 8px 10px; border: 1px solid var(--line); border-radius: 6px; }
textarea { min-height: 90px; resize: vertical; }
button { justify-self: start; font: inherit; font-weight: 600; color: white; background: var(--accent);
  border: 0; border-radius: 6px; padding: 8px 20px; cursor: pointer; }
button:disabled { opacity: .6; cursor: wait; }
#error { color: var(--bad); min-height: 1.5em; margin: 0; }
#error:empty { display: none; }
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
<form id="post-form" autocomplete="on">
<label for="author">Your name</label>
<input id="author" name="author" required placeholder="Ada">
<label for="text">Message</label>
<textarea id="text" name="text" required placeholder="Say hello"></textarea>
<button id="post" type="submit">Post</button>
<p id="error" role="alert"></p>
</form>
<h2>Latest messages</h2>
<p id="empty" hidden>No messages yet. Be the first!</p>
<ol id="messages"></ol>
</main>
<footer><span id="served-by" data-page-node="{{web_node}}">Page served by web node {{web_node}}.</span></footer>
<script>
"use strict";
const form = document.getElementById("post-form");
const authorInput = document.getElementById("author");
const textInput = document.getElementById("text");
const postButton = document.getElementById("post");
const errorLine = document.getElementById("error");
const list = document.getElementById("messages");
const emptyLine = document.getElementById("empty");
const servedBy = document.getElementById("served-by");
const pageNode = servedBy.dataset.pageNode;

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
    meta.append(element("span", "author", m.author));
    const when = element("time", "time", new Date(m.created_at).toLocaleString());
    when.dateTime = m.created_at;
    meta.append(when);
    li.append(meta, element("p", "text", m.text));
    return li;
  });
  list.replaceChildren(...items);
  emptyLine.hidden = items.length > 0;
}

function showAnswer(data) {
  servedBy.textContent = "Page served by web node " + pageNode + ". Last API answer: web node " +
    data.web_node + ", database node " + data.db_node + ".";
}

// The error text for a failed API call: the server's JSON message when there is one.
async function failure(response) {
  let message = "";
  try { message = (await response.json()).error || ""; } catch (e) { /* not JSON */ }
  if (response.status === 503) {
    const retry = response.headers.get("Retry-After");
    return "The database is failing over; please retry" + (retry ? " in " + retry + " s" : "") +
      (message ? " (" + message + ")" : ".");
  }
  return message || ("Request failed: HTTP " + response.status);
}

async function load() {
  try {
    const response = await fetch("/api/messages?limit=50", { cache: "no-store", headers: { Accept: "application/json" } });
    if (!response.ok) {
      errorLine.textContent = await failure(response);
      return;
    }
    const data = await response.json();
    render(data.messages);
    showAnswer(data);
  } catch (e) {
    errorLine.textContent = "Could not load messages: " + e.message;
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  errorLine.textContent = "";
  postButton.disabled = true;
  try {
    const response = await fetch("/api/messages", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ author: authorInput.value, text: textInput.value }),
    });
    if (response.status === 201) {
      showAnswer(await response.json());
      textInput.value = "";
      await load();
    } else {
      errorLine.textContent = await failure(response);
    }
  } catch (e) {
    errorLine.textContent = "Could not post: " + e.message;
  } finally {
    postButton.disabled = false;
  }
});

load();
setInterval(() => { if (!document.hidden) { load(); } }, 15000);
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
