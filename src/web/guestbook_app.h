#pragma once
// The guestbook's HTTP side, one instance per worker thread: GET / (the page), GET and POST
// /api/messages answered later through the worker's DbRouter (the connection waits, the
// worker does not); every other request goes to the shared WebApp (health, metrics, files).
#include <optional>
#include <string>
#include <vector>

#include "http/server.h"
#include "web/db_router.h"
#include "web/guestbook_model.h"

namespace fulcrum::web {

class GuestbookApp final : public http::Handler {
 public:
  GuestbookApp(std::string node_name, http::Handler& fallback, DbRouter& router);
  // POST /api/messages takes guestbook::kMaxBodyBytes; every other route none.
  uint64_t maxBodyBytes(const http::RequestHead& head) const override;
  void handle(const http::Request& request, http::Response& response) override;
  size_t routeOf(const http::RequestHead& head) const override;
  // A reload's new router (another [[db.node]] list), on this worker's thread: requests from now
  // on use it; those already waiting on the old one finish there.
  void setRouter(DbRouter& router) { router_ = &router; }

 private:
  void list(const http::Request& request, http::Response& response);
  void post(const http::Request& request, http::Response& response);

  std::string node_name_;
  std::string page_;  // built once: it only names this node
  http::Handler& fallback_;
  DbRouter* router_;
};

// A row of kInsertSql / kSelectLatestSql (id, author, text, created_at); nullopt if malformed.
std::optional<guestbook::Message> messageFromRow(const std::vector<std::string>& row);
// A JSON answer: status, Content-Type, no caching.
void setJson(http::Response& response, int status, std::string body);
// The answer to a database failure: the status it carries (400, 503) with an error object;
// a 503 says when to retry.
void setDbFailure(http::Response& response, const DbReply& reply);

}  // namespace fulcrum::web
