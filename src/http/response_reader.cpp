#include "http/response_reader.h"

#include <utility>

namespace fulcrum::http {

namespace {

const Limits kResponseLimits{};  // a response head must fit max_header_bytes (16 KiB)

}  // namespace

void ResponseReader::reset(Method request_method, uint64_t max_body_bytes) {
  method_ = request_method;
  max_body_bytes_ = max_body_bytes;
  state_ = State::Head;
  saw_bytes_ = false;
  status_ = 0;
  keep_alive_ = false;
  body_kind_ = BodyKind::None;
  scanner_.reset();
  error_.clear();
}

void ResponseReader::fail(std::string why) {
  state_ = State::Failed;
  error_ = std::move(why);
}

bool ResponseReader::reusable() const {
  return state_ == State::Done && keep_alive_ && body_kind_ != BodyKind::UntilClose &&
         body_kind_ != BodyKind::Tunnel;
}

size_t ResponseReader::read(std::string_view input, std::string& body) {
  size_t used = 0;
  saw_bytes_ = saw_bytes_ || !input.empty();
  while (state_ == State::Head) {
    ParseResult parsed = scanner_.parseResponse(input.substr(used), kResponseLimits, method_, head_);
    if (parsed.state == ParseState::Incomplete) {
      return used;
    }
    if (parsed.state == ParseState::Error) {
      fail("bad response: " + std::string(parsed.reason));
      return used;
    }
    used += parsed.consumed;
    if (head_.status >= 100 && head_.status < 200 && head_.status != 101) {
      continue;  // an interim answer (100 Continue): the final one follows
    }
    status_ = head_.status;
    keep_alive_ = head_.keep_alive;
    body_kind_ = head_.body_kind;
    decoder_.reset(head_.body_kind, head_.content_length, max_body_bytes_);
    state_ = State::Body;
  }
  while (state_ == State::Body) {
    BodyStep step = decoder_.step(input.substr(used));
    if (step.error_status != 0) {
      fail(step.error_status == 413
               ? "response body too large (over " + std::to_string(max_body_bytes_) + " bytes)"
               : std::string("bad response body framing"));
      return used;
    }
    body.append(step.payload);
    used += step.consumed;
    if (step.done) {
      state_ = State::Done;
    } else if (step.consumed == 0) {
      break;  // needs more input
    }
  }
  return used;
}

void ResponseReader::closed() {
  switch (state_) {
    case State::Head:
      fail(saw_bytes_ ? "connection closed before the end of the response head"
                      : "connection closed before a response");
      break;
    case State::Body:
      if (body_kind_ == BodyKind::UntilClose) {
        state_ = State::Done;
      } else {
        fail("connection closed before the end of the response");
      }
      break;
    case State::Done:
    case State::Failed:
      break;
  }
}

}  // namespace fulcrum::http
