// Planned switchover on the leader (switchover.h has the protocol). The request is checked and
// answered here or deferred; the steps run in the control loop, which ticks every
// kSwitchoverPoll meanwhile, and each step is bounded. Also manual failover (POST /failover), on
// the replica that should lead a cluster without a leader.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/log.h"
#include "db/agent.h"
#include "db/backup_catalog.h"
#include "http/bearer.h"
#include "http/client.h"
#include "http/json_body.h"

namespace fulcrum::db {

using pg::formatLsn;

namespace {

using std::chrono::milliseconds;

// The target must have flushed the old leader's last WAL within this (its agent publishes its
// position every leader_ttl_ms / 5). Both bounds together stay under the HTTP server's 30 s
// idle timeout, which also runs while an answer is deferred.
milliseconds catchUpBound(const config::Site& site) {
  return std::clamp(milliseconds(site.db.leader_ttl_ms) * 2, milliseconds(5000), milliseconds(10000));
}
// After the key is released, the target must take it (it looks every leader_ttl_ms / 15 while
// there is no leader) and promote (pg_promote waits up to 10 s) within this.
milliseconds takeoverBound(const config::Site& site) {
  return std::min(milliseconds(site.db.leader_ttl_ms) + milliseconds(10000), milliseconds(15000));
}

std::string errorBody(const std::string& message) {
  return nlohmann::json{{"error", message}}.dump();
}

void refuse(http::Response& response, int status, const std::string& message) {
  response.setBody(status, "application/json", errorBody(message));
}

// The checks both admin calls start with: the bearer token (401), then the body (400).
std::optional<SwitchoverRequest> adminRequest(const http::Request& request, http::Response& response,
                                              const std::string& token) {
  if (!http::hasBearerToken(request.head, token)) {
    response.addHeader("WWW-Authenticate", "Bearer");
    refuse(response, 401,
           "a valid 'Authorization: Bearer TOKEN' is required (token in state_dir/admin.token)");
    return std::nullopt;
  }
  auto parsed = parseSwitchoverRequest(request.body);
  if (!parsed.ok) {
    refuse(response, 400, parsed.error);
    return std::nullopt;
  }
  return parsed.value;
}

}  // namespace

bool DbAgent::refuseUncertified(std::string_view peer_certificate, http::Response& response) const {
  // Under internal_tls the token alone (a file any host of the site may hold) is not enough: the
  // caller also proves it holds a site certificate (the operator's, a node's).
  if (!internal_tls_ || !peer_certificate.empty()) {
    return false;
  }
  refuse(response, 403,
         "a client certificate from the site CA is required (internal_tls): present the operator's "
         "(state_dir/tls/operator.crt) along with the token");
  return true;
}

bool DbAgent::refuseUnauthorized(const http::Request& request, http::Response& response) const {
  if (refuseUncertified(request.peer_certificate, response)) {
    return true;
  }
  if (http::hasBearerToken(request.head, admin_token_)) {
    return false;
  }
  response.addHeader("WWW-Authenticate", "Bearer");
  refuse(response, 401, "a valid 'Authorization: Bearer TOKEN' is required (token in state_dir/admin.token)");
  return true;
}

bool DbAgent::refuseBeforeBody(const http::RequestHead& head, std::string_view peer_certificate,
                               http::Response& response) const {
  // Only the admin calls take a body, and only from a caller with the token (and the site
  // certificate): anyone else is answered before a byte of it is read.
  if (refuseUncertified(peer_certificate, response)) {
    return true;
  }
  if (http::hasBearerToken(head, admin_token_)) {
    return false;
  }
  response.addHeader("WWW-Authenticate", "Bearer");
  refuse(response, 401, "a valid 'Authorization: Bearer TOKEN' is required (token in state_dir/admin.token)");
  return true;
}

bool DbAgent::intentBlocks() const {
  return intent_ && intent_->to != node_.name;
}

void DbAgent::forwardAdmin(const http::Request& request, http::Response& response, const std::string& node) {
  // Patroni accepts /switchover and /failover on any member: carried to the agent that acts, at
  // the address the topology gives it (never one read from etcd: the bearer token goes along).
  if (auto from = request.head.find("x-fulcrum-forwarded")) {
    refuse(response, 503,
           node_.name + " cannot act on this and it was already forwarded by " +
               std::string(*from).substr(0, 64));
    return;
  }
  const config::DbNode* target = nullptr;
  for (const auto& n : site_.db.nodes) {
    if (n.name == node) {
      target = &n;
    }
  }
  auto authorization = request.head.find("authorization");
  if (target == nullptr || !authorization) {
    refuse(response, 503, "no agent address for " + node);
    return;
  }
  log::info("forwarding POST {} to {} at {}", request.head.path, node, target->agent.toString());
  // The client's connection to us idles out after 30 s, deferred answers included.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(28);
  std::string headers =
      "Authorization: " + std::string(*authorization) + "\r\nX-Fulcrum-Forwarded: " + node_.name + "\r\n";
  std::thread([mailbox = forward_mailbox_, reply = request.defer(), to = target->agent, tls = client_tls_,
               path = std::string(request.head.path), body = std::string(request.body),
               headers = std::move(headers), deadline, node]() mutable {
    http::ClientRequest forwarded;
    forwarded.method = http::Method::Post;
    forwarded.path = path;
    forwarded.body = body;
    forwarded.headers = headers;
    http::ClientOptions options;
    options.max_body_bytes = 64 << 10;
    options.tls = std::move(tls);  // internal_tls: this node's certificate answers for the call
    http::ClientOutcome outcome = http::fetchOnce(to, forwarded, deadline, options);
    http::Response answer;
    if (outcome.response.ok) {
      answer.setBody(outcome.response.value.status, "application/json",
                     std::move(outcome.response.value.body));
    } else {
      answer.setBody(
          502, "application/json",
          errorBody("forwarding to " + node + " at " + to.toString() + ": " + outcome.response.error));
    }
    std::lock_guard lock(mailbox->mutex);
    if (mailbox->loop != nullptr) {  // the agent may have shut down meanwhile
      auto shared = std::make_shared<http::Response>(std::move(answer));  // std::function copies
      mailbox->loop->post([reply, shared]() mutable { reply.complete(std::move(*shared)); });
    }
  }).detach();
}

void DbAgent::handleSwitchover(const http::Request& request, http::Response& response) {
  auto refuse = [&](int status, const std::string& message) { db::refuse(response, status, message); };
  std::optional<SwitchoverRequest> parsed = adminRequest(request, response, admin_token_);
  if (!parsed) {
    return;
  }
  if (parsed->cancel) {
    // Any agent can drop the schedule (it needs no leader), as etcd has it now: this agent's
    // last read may predate it.
    const std::string key = scheduledKey(site_.site.name);
    auto current = etcd_.get(key);
    if (!current.ok) {
      refuse(503, "etcd: " + current.error);
      return;
    }
    if (!current.value) {
      response.setBody(200, "application/json",
                       nlohmann::json{{"cancelled", false}, {"message", "no switchover is scheduled"}}.dump());
      return;
    }
    auto deleted = etcd_.deleteIfUnchanged(key, current.value->mod_revision);
    if (!deleted.ok || !deleted.value) {
      refuse(503, "the schedule could not be removed (" +
                      (deleted.ok ? std::string("it changed meanwhile") : deleted.error) + "); try again");
      return;
    }
    const auto planned = decodeScheduled(current.value->value);
    const std::string when = planned ? "for " + formatUtc(planned->at) : "(unreadable)";
    log::info("the switchover scheduled {} is cancelled by the operator", when);
    response.setBody(
        200, "application/json",
        nlohmann::json{{"cancelled", true}, {"message", "the switchover scheduled " + when + " is cancelled"}}.dump());
    scheduled_.reset();
    return;
  }
  if (!elector_.isLeader() && leader_name_ && *leader_name_ != node_.name) {
    forwardAdmin(request, response, *leader_name_);
    return;
  }
  if (switchover_) {
    refuse(409, "a switchover to " + switchover_->to + " is already in progress");
    return;
  }
  if (!elector_.isLeader() || primaryStatus(view()) != 200) {
    std::string where = leader_name_ ? "the leader is " + *leader_name_ : std::string("there is no leader");
    const MemberRecord* leader = leader_name_ ? findMember(members_, *leader_name_) : nullptr;
    if (leader != nullptr && !leader->agent.empty()) {
      where += " (agent " + leader->agent + ")";
    }
    refuse(503, node_.name + " is not a leader accepting writes: " + where);
    return;
  }
  SwitchoverChoice choice = chooseSwitchover(*parsed);
  if (choice.status != 200) {
    refuse(choice.status, choice.error);
    return;
  }
  if (parsed->at) {
    // Later: the key says when; this leader begins it then, if it still leads (Patroni's
    // scheduled switchover). The target is checked now and again at that time.
    const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    if (*parsed->at <= now) {
      refuse(400, "\"at\" (" + formatUtc(*parsed->at) + ") is not in the future (it is " + formatUtc(now) +
                      "); leave it out to switch over now");
      return;
    }
    if (scheduled_) {
      refuse(409, "a switchover is already scheduled for " + formatUtc(scheduled_->at) +
                      " (`fulcrum db switchover --cancel` drops it)");
      return;
    }
    const ScheduledSwitchover planned{node_.name, parsed->to.value_or(""), *parsed->at};
    auto created = etcd_.createIfAbsent(scheduledKey(site_.site.name), encodeScheduled(planned));
    if (!created.ok || !created.value) {
      refuse(created.ok ? 409 : 503, created.ok ? "a switchover was scheduled meanwhile" : "etcd: " + created.error);
      return;
    }
    scheduled_ = planned;
    scheduled_value_ = encodeScheduled(planned);
    log::info("switchover to {} scheduled for {}", parsed->to.value_or("the best replica then"),
              formatUtc(planned.at));
    response.setBody(202, "application/json",
                     nlohmann::json{{"scheduled", formatUtc(planned.at)},
                                    {"from", node_.name},
                                    {"to", parsed->to ? nlohmann::json(*parsed->to) : nlohmann::json(nullptr)},
                                    {"message", "switchover to " + parsed->to.value_or("the best replica then") +
                                                    " scheduled for " + formatUtc(planned.at)}}
                         .dump());
    return;
  }
  beginSwitchover(choice.target, request.defer());
}

SwitchoverChoice DbAgent::chooseSwitchover(const SwitchoverRequest& request) const {
  SwitchoverInputs in;
  in.me = node_.name;
  for (const auto& n : site_.db.nodes) {
    in.nodes.insert(n.name);
  }
  in.timeline = pg_status_.timeline;
  in.members = members_;
  if (syncMode()) {
    in.sync = sync_key_ ? sync_key_ : SyncState{node_.name, {}};
  }
  return chooseSwitchoverTarget(request, in);
}

void DbAgent::beginSwitchover(const std::string& target, http::DeferredResponse reply) {
  Switchover s;
  s.to = target;
  s.reply = std::move(reply);
  s.started = loop_.clock().now();
  switchover_ = std::move(s);
  log::info("switchover to {} requested", target);
  schedule(loop_.clock().now());
}

void DbAgent::driveScheduledSwitchover() {
  const std::string key = scheduledKey(site_.site.name);
  if (scheduled_->from != node_.name) {
    // Planned by a leader that is gone: the cluster it meant has changed.
    if (auto dropped = etcd_.compareAndDelete(key, scheduled_value_); dropped.ok && dropped.value) {
      log::warn("dropping the switchover {} scheduled for {}: {} no longer leads", scheduled_->from,
                formatUtc(scheduled_->at), scheduled_->from);
      scheduled_.reset();
    }
    return;
  }
  const int64_t now =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  if (now < scheduled_->at) {
    return;
  }
  auto taken = etcd_.compareAndDelete(key, scheduled_value_);
  if (!taken.ok || !taken.value) {
    return;  // cancelled meanwhile, or etcd failed: the next read says which
  }
  const ScheduledSwitchover planned = *scheduled_;
  scheduled_.reset();
  SwitchoverRequest request;
  if (!planned.to.empty()) {
    request.to = planned.to;
  }
  SwitchoverChoice choice = chooseSwitchover(request);
  if (choice.status != 200 || primaryStatus(view()) != 200) {
    log::error("the switchover scheduled for {} is not done: {}", formatUtc(planned.at),
               choice.status != 200 ? choice.error : std::string("this leader does not accept writes now"));
    return;
  }
  log::info("the switchover scheduled for {} begins", formatUtc(planned.at));
  beginSwitchover(choice.target, http::DeferredResponse());
}

void DbAgent::handleFailover(const http::Request& request, http::Response& response) {
  auto refuse = [&](int status, const std::string& message) { db::refuse(response, status, message); };
  std::optional<SwitchoverRequest> parsed = adminRequest(request, response, admin_token_);
  if (!parsed) {
    return;
  }
  if (parsed->at || parsed->cancel) {
    refuse(400, "a failover is neither scheduled nor cancelled: only {\"to\": NODE}");
    return;
  }
  if (parsed->to && *parsed->to != node_.name && nodes_.count(*parsed->to) != 0) {
    forwardAdmin(request, response, *parsed->to);  // the named replica carries it out
    return;
  }
  FailoverInputs in;
  in.me = node_.name;
  for (const auto& n : site_.db.nodes) {
    in.nodes.insert(n.name);
  }
  in.leader = elector_.isLeader() ? std::optional<std::string>(node_.name) : leader_name_;
  if (const MemberRecord* leader = in.leader ? findMember(members_, *in.leader) : nullptr) {
    in.leader_agent = leader->agent;
  }
  in.running_replica = pg_running_ && status_ok_ && pg_status_.in_recovery;
  in.intent_for_other = intentBlocks();
  in.replayed = pg_status_.replay_lsn;
  in.mine = std::max(pg_status_.receive_lsn, pg_status_.replay_lsn);
  in.last_leader_lsn = last_leader_lsn_;
  in.max_lag_bytes = site_.db.max_lag_bytes;
  in.sync_mode = syncMode();
  in.sync = sync_key_;
  in.members = members_;
  FailoverCheck check = checkManualFailover(*parsed, in);
  if (check.status != 200) {
    refuse(check.status, check.error);
    return;
  }
  const core::TimePoint started = loop_.clock().now();
  log::info("manual failover to this node requested");
  if (!takeOver("manual failover")) {
    std::string holder = leader_name_ ? " (" + *leader_name_ + " holds it)" : "";
    refuse(503, "could not take the leader key and promote" + holder + "; see this agent's log");
    return;
  }
  const auto took = std::chrono::duration_cast<milliseconds>(loop_.clock().now() - started);
  nlohmann::json body = {
      {"leader", node_.name}, {"ms", took.count()}, {"message", node_.name + " is the leader"}};
  response.setBody(200, "application/json", body.dump());
  schedule(loop_.clock().now());  // publish the new role at once
}

void DbAgent::finishSwitchover(int status, const std::string& message) {
  const auto took = std::chrono::duration_cast<milliseconds>(loop_.clock().now() - switchover_->started);
  nlohmann::json body = {{"from", node_.name}, {"to", switchover_->to}, {"ms", took.count()}};
  body[status == 200 ? "message" : "error"] = message;
  http::Response response;
  response.setBody(status, "application/json", body.dump());
  switchover_->reply.complete(std::move(response));
  // Done as planned: info; refused or failed: warn.
  if (log::enabled(status == 200 ? log::Level::Info : log::Level::Warn)) {
    log::write(status == 200 ? log::Level::Info : log::Level::Warn,
               fmt::format("switchover to {}: {} ({} ms)", switchover_->to, message, took.count()));
  }
  if (!switchover_->intent_value.empty()) {
    // The intent must not outlive the attempt (else it expires with our member lease).
    auto deleted = etcd_.compareAndDelete(switchoverKey(site_.site.name), switchover_->intent_value);
    if (!deleted.ok) {
      log::warn("deleting the switchover intent: {}", deleted.error);
    }
  }
  switchover_.reset();
}

void DbAgent::driveSwitchover() {
  Switchover& s = *switchover_;
  const core::TimePoint now = loop_.clock().now();
  const std::string& me = node_.name;
  switch (s.step) {
    case Switchover::Step::Announce: {
      if (!elector_.mayWrite() || !pg_->isRunning() || !etcd_ok_) {
        finishSwitchover(503, me + " stopped being a leader accepting writes; nothing changed");
        return;
      }
      const std::string value = encodeSwitchover(SwitchoverIntent{me, s.to});
      capEtcd();
      auto put = etcd_.putIfValue(leaderKey(site_.site.name), me, switchoverKey(site_.site.name), value,
                                  member_lease_);
      etcd_.capDeadline(std::nullopt);
      if (!put.ok || !put.value) {
        finishSwitchover(503, "cannot publish the switchover intent: " +
                                  (put.ok ? std::string("the leader key is not ours") : put.error));
        return;
      }
      s.intent_value = value;
      intent_ = SwitchoverIntent{me, s.to};
      log::info("switchover to {}: stopping PostgreSQL (fast: a checkpoint, then all WAL to the replicas)",
                s.to);
      Status stopped = pg_->stop(StopMode::Fast);
      auto last = stopped.ok ? pg_->cleanShutdownLsn() : Result<Lsn>::failure(stopped.error);
      observe();
      if (!last.ok) {
        // Still the leader: the next tick starts PostgreSQL again.
        finishSwitchover(503, "PostgreSQL did not stop cleanly (" + last.error + "); switchover given up, " +
                                  me + " stays the leader");
        return;
      }
      s.final_lsn = last.value;
      s.step = Switchover::Step::CatchUp;
      s.deadline = now + catchUpBound(site_);
      return;
    }
    case Switchover::Step::CatchUp: {
      if (!elector_.isLeader() || !elector_.mayWrite()) {
        finishSwitchover(503, "lost the leader lease during the switchover; failover elects the next leader");
        return;
      }
      const MemberRecord* target = findMember(members_, s.to);
      if (target != nullptr && target->received > s.final_lsn) {
        log::info("switchover: {} has flushed past the last checkpoint {}: releasing the leader key", s.to,
                  formatLsn(s.final_lsn));
        ++switchovers_;
        if (Status released = elector_.release(); !released.ok) {
          log::warn("releasing the leader lease: {} (it expires by itself)", released.error);
        }
        s.step = Switchover::Step::Takeover;
        s.deadline = now + takeoverBound(site_);
        return;
      }
      if (now >= s.deadline) {
        finishSwitchover(503, s.to + " did not receive the WAL up to " + formatLsn(s.final_lsn) + " within " +
                                  std::to_string(catchUpBound(site_).count()) + " ms; switchover given up, " +
                                  me + " stays the leader");
      }
      return;
    }
    case Switchover::Step::Takeover: {
      // Answered once the target holds the key and has published itself as a running primary.
      const MemberRecord* target = findMember(members_, s.to);
      const bool leads = leader_name_ && *leader_name_ == s.to;
      if (leads && target != nullptr && target->role == "primary") {
        finishSwitchover(200, s.to + " is the leader");
      } else if (leader_name_ && *leader_name_ != s.to && *leader_name_ != me) {
        finishSwitchover(503, *leader_name_ + " took the leader key instead of " + s.to);
      } else if (now >= s.deadline) {
        finishSwitchover(503, s.to +
                                  (leads ? " took the leader key but did not come up as primary within "
                                         : " did not take the leader key within ") +
                                  std::to_string(takeoverBound(site_).count()) +
                                  " ms; ordinary failover elects the next leader");
      }
      return;
    }
  }
}

}  // namespace fulcrum::db

namespace fulcrum::db {

void DbAgent::handlePause(const http::Request& request, http::Response& response) {
  if (refuseUnauthorized(request, response)) {
    return;
  }
  std::string error;
  std::optional<nlohmann::json> body = http::parseStrictJson(request.body, error);
  if (!body || !body->is_object() || body->size() != 1 || !body->contains("paused") ||
      !(*body)["paused"].is_boolean()) {
    refuse(response, 400, (error.empty() ? std::string("bad body") : error) + R"(: expected {"paused": true|false})");
    return;
  }
  const bool paused = (*body)["paused"].get<bool>();
  const std::string key = pauseKey(site_.site.name);
  if (paused) {
    // By whom: the forwarded-by header when another agent carried it, else this agent's node.
    PauseRecord record{"operator via " + node_.name,
                       std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count()};
    auto created = etcd_.createIfAbsent(key, encodePause(record));
    if (!created.ok) {
      refuse(response, 503, "etcd: " + created.error);
      return;
    }
    if (!created.value) {
      response.setBody(200, "application/json", nlohmann::json{{"paused", true}, {"changed", false}}.dump());
      return;
    }
    log::info("maintenance mode requested: automatic failover paused for the cluster");
  } else {
    auto current = etcd_.get(key);
    if (!current.ok) {
      refuse(response, 503, "etcd: " + current.error);
      return;
    }
    auto deleted = current.value ? etcd_.deleteIfUnchanged(key, current.value->mod_revision) : Result<bool>::success(false);
    if (!deleted.ok) {
      refuse(response, 503, "etcd: " + deleted.error);
      return;
    }
    if (!deleted.value) {
      response.setBody(200, "application/json", nlohmann::json{{"paused", false}, {"changed", false}}.dump());
      return;
    }
    log::info("maintenance mode ended on request: automatic failover resumes");
  }
  wake();
  response.setBody(200, "application/json", nlohmann::json{{"paused", paused}, {"changed", true}}.dump());
}

}  // namespace fulcrum::db
