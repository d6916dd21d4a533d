#pragma once
// The guestbook's HTML page (GET /): self-contained (inline CSS and JS, no other request but
// /api/messages). Messages are inserted with textContent, so stored HTML never runs.
#include <string>
#include <string_view>

namespace fulcrum::web::guestbook {

// The page, naming the web node that served it (HTML-escaped).
std::string pageHtml(std::string_view web_node);

// Escapes & < > " ' for HTML text and attribute values.
std::string htmlEscape(std::string_view s);

}  // namespace fulcrum::web::guestbook
