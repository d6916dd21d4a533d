#include "metrics/prometheus.h"

#include <fmt/format.h>

namespace fulcrum::metrics {

void PrometheusWriter::family(std::string_view name, std::string_view type, std::string_view help) {
  fmt::format_to(std::back_inserter(out_), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

namespace {

std::span<const Label> asSpan(std::initializer_list<Label> l) {
  return {l.begin(), l.size()};
}

}  // namespace

void PrometheusWriter::labels(std::span<const Label> labels, std::string_view le) {
  if (labels.size() == 0 && le.empty()) {
    return;
  }
  out_ += '{';
  bool first = true;
  for (const auto& [key, value] : labels) {
    if (!first) {
      out_ += ',';
    }
    first = false;
    out_ += key;
    out_ += "=\"";
    for (char c : value) {
      if (c == '\\' || c == '"') {
        out_ += '\\';
        out_ += c;
      } else if (c == '\n') {
        out_ += "\\n";
      } else {
        out_ += c;
      }
    }
    out_ += '"';
  }
  if (!le.empty()) {
    out_ += first ? "le=\"" : ",le=\"";
    out_ += le;
    out_ += '"';
  }
  out_ += '}';
}

void PrometheusWriter::sample(std::string_view name, std::initializer_list<Label> l, double value) {
  sampleOf(name, asSpan(l), value);
}

void PrometheusWriter::sample(std::string_view name, std::initializer_list<Label> l, uint64_t value) {
  sampleOf(name, asSpan(l), value);
}

void PrometheusWriter::sampleOf(std::string_view name, std::span<const Label> l, double value) {
  out_ += name;
  labels(l);
  fmt::format_to(std::back_inserter(out_), " {}\n", value);
}

void PrometheusWriter::sampleOf(std::string_view name, std::span<const Label> l, uint64_t value) {
  out_ += name;
  labels(l);
  fmt::format_to(std::back_inserter(out_), " {}\n", value);
}

}  // namespace fulcrum::metrics

namespace fulcrum::metrics {

void PrometheusWriter::histogram(std::string_view name, std::initializer_list<Label> l,
                                 const core::HistogramSnapshot& h) {
  uint64_t cumulative = 0;
  char le[32];
  for (size_t i = 0; i < core::kHistogramBuckets; ++i) {
    cumulative += h.buckets[i];
    std::string_view bound = "+Inf";
    if (i < core::kHistogramBoundsUs.size()) {
      auto end = fmt::format_to_n(le, sizeof le, "{}", static_cast<double>(core::kHistogramBoundsUs[i]) / 1e6);
      bound = std::string_view(le, end.out - le);
    }
    out_ += name;
    out_ += "_bucket";
    labels(asSpan(l), bound);
    fmt::format_to(std::back_inserter(out_), " {}\n", cumulative);
  }
  out_ += name;
  out_ += "_sum";
  labels(asSpan(l));
  fmt::format_to(std::back_inserter(out_), " {}\n", static_cast<double>(h.sum_us) / 1e6);
  out_ += name;
  out_ += "_count";
  labels(asSpan(l));
  fmt::format_to(std::back_inserter(out_), " {}\n", cumulative);
}

}  // namespace fulcrum::metrics
