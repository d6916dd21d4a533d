#include "web/guestbook_app.h"

#include <algorithm>
#include <charconv>
#include <chrono>

#include "web/guestbook_page.h"
#include "web/web_app.h"

namespace fulcrum::web {

namespace gb = guestbook;

namespace {

constexpr std::string_view kApiPath = "/api/messages";

void methodNotAllowed(http::Response& response, std::string_view allow) {
  setJson(response, 405, gb::errorJson("method not allowed"));
  response.addHeader("Allow", allow);
}

}  // namespace

std::optional<gb::Message> messageFromRow(const std::vector<std::string>& row) {
  if (row.size() < 4) {
    return std::nullopt;
  }
  gb::Message m;
  auto [end, ec] = std::from_chars(row[0].data(), row[0].data() + row[0].size(), m.id);
  if (ec != std::errc() || end != row[0].data() + row[0].size()) {
    return std::nullopt;
  }
  m.author = row[1];
  m.text = row[2];
  m.created_at = row[3];
  return m;
}

void setJson(http::Response& response, int status, std::string body) {
  response.setBody(status, "application/json", std::move(body));
  response.addHeader("Cache-Control", "no-store");
}

void setDbFailure(http::Response& response, const DbReply& reply) {
  int status = reply.status == 400 ? 400 : 503;
  setJson(response, status, gb::errorJson(reply.error));
  if (status == 503) {
    // Whole seconds (RFC 9110 §10.2.3), rounded up: earlier would be too early.
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(reply.retry_after).count();
    response.addHeader("Retry-After", std::to_string(std::max<int64_t>(1, (ms + 999) / 1000)));
  }
}

GuestbookApp::GuestbookApp(std::string node_name, http::Handler& fallback, DbRouter& router)
    : node_name_(std::move(node_name)),
      page_(gb::pageHtml(node_name_)),
      fallback_(fallback),
      router_(&router) {}

uint64_t GuestbookApp::maxBodyBytes(const http::RequestHead& head) const {
  if (head.path == kApiPath && head.method == http::Method::Post) {
    return gb::kMaxBodyBytes;
  }
  return fallback_.maxBodyBytes(head);
}

size_t GuestbookApp::routeOf(const http::RequestHead& head) const {
  if (head.path == "/" || head.path == kApiPath) {
    return static_cast<size_t>(Route::Guestbook);
  }
  return fallback_.routeOf(head);
}

void GuestbookApp::handle(const http::Request& request, http::Response& response) {
  std::string_view path = request.head.path;
  http::Method method = request.head.method;
  bool read_method = method == http::Method::Get || method == http::Method::Head;
  if (path == "/healthz" && read_method && !router_->allReady()) {
    // Just started: no database node heard from yet, so the API would answer 503.
    response.setBody(503, "text/plain; charset=utf-8", "starting: database nodes not heard from yet\n");
    response.addHeader("Cache-Control", "no-store");
    response.addHeader("Retry-After", "1");
    return;
  }
  if (path == "/") {
    if (!read_method) {
      methodNotAllowed(response, "GET, HEAD");
      return;
    }
    response.setBody(200, "text/html; charset=utf-8", page_);
    response.addHeader("Cache-Control", "no-cache");
    return;
  }
  if (path == kApiPath) {
    if (read_method) {
      list(request, response);
    } else if (method == http::Method::Post) {
      post(request, response);
    } else {
      methodNotAllowed(response, "GET, HEAD, POST");
    }
    return;
  }
  fallback_.handle(request, response);
}

void GuestbookApp::list(const http::Request& request, http::Response& response) {
  auto limit = gb::parseLimit(request.head.query);
  if (auto* bad = std::get_if<gb::Invalid>(&limit)) {
    setJson(response, bad->status, gb::errorJson(bad->message));
    return;
  }
  std::optional<Lsn> token;
  // A client or an HTTP/2 gateway may split cookies over several lines (RFC 9113 §8.2.3).
  if (auto cookie = request.head.findList("Cookie", "; ")) {
    token = lsnFromCookieHeader(*cookie);
  }
  http::DeferredResponse later = request.defer();
  router_->read(gb::kSelectLatestSql, {std::to_string(std::get<int>(limit))}, token,
                [this, later](DbReply& reply) mutable {
                  http::Response out;
                  if (reply.status != 200) {
                    setDbFailure(out, reply);
                  } else {
                    std::vector<gb::Message> rows;
                    for (const auto& row : reply.rows) {
                      if (auto m = messageFromRow(row)) {
                        rows.push_back(std::move(*m));
                      }
                    }
                    setJson(out, 200, gb::messagesJson(rows, node_name_, reply.node));
                    out.addHeader("X-Db-Node", reply.node);
                  }
                  later.complete(std::move(out));
                });
}

void GuestbookApp::post(const http::Request& request, http::Response& response) {
  if (request.head.count("Content-Type") > 1) {
    setJson(response, 400, gb::errorJson("repeated Content-Type"));
    return;
  }
  auto parsed = gb::parseNewMessage(request.head.find("Content-Type").value_or(""), request.body);
  if (auto* bad = std::get_if<gb::Invalid>(&parsed)) {
    setJson(response, bad->status, gb::errorJson(bad->message));
    return;
  }
  auto& message = std::get<gb::NewMessage>(parsed);
  http::DeferredResponse later = request.defer();
  router_->write(gb::kInsertSql, {std::move(message.author), std::move(message.text)},
                 [this, later](DbReply& reply) mutable {
                   http::Response out;
                   std::optional<gb::Message> row;
                   if (reply.status == 200 && !reply.rows.empty()) {
                     row = messageFromRow(reply.rows[0]);
                   }
                   if (reply.status != 200) {
                     setDbFailure(out, reply);
                   } else if (!row) {
                     reply.status = 503;
                     reply.error = "the database answered no row";
                     setDbFailure(out, reply);
                   } else {
                     setJson(out, 201, gb::messageJson(*row, node_name_, reply.node));
                     out.addHeader("X-Db-Node", reply.node);
                     if (reply.lsn) {
                       out.addHeader("Set-Cookie", lsnSetCookie(*reply.lsn));
                     }
                   }
                   later.complete(std::move(out));
                 });
}

}  // namespace fulcrum::web
