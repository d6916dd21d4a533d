#pragma once
// Writes the Prometheus text exposition format (version 0.0.4).
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "core/histogram.h"

namespace fulcrum::metrics {

using Label = std::pair<std::string_view, std::string_view>;

class PrometheusWriter {
 public:
  // Starts a metric family: "# HELP" and "# TYPE" lines. type: counter | gauge | histogram.
  void family(std::string_view name, std::string_view type, std::string_view help);
  void sample(std::string_view name, std::initializer_list<Label> labels, double value);
  void sample(std::string_view name, std::initializer_list<Label> labels, uint64_t value);
  // The same with labels built at run time (a helper shared by families of different labels).
  void sampleOf(std::string_view name, std::span<const Label> labels, double value);
  void sampleOf(std::string_view name, std::span<const Label> labels, uint64_t value);
  // The samples of one histogram (its family started with type "histogram"): cumulative
  // `name_bucket{...,le="…"}` in seconds through +Inf, then `name_sum` (seconds) and `name_count`.
  void histogram(std::string_view name, std::initializer_list<Label> labels, const core::HistogramSnapshot& h);
  const std::string& text() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  void labels(std::span<const Label> labels, std::string_view le = {});
  std::string out_;
};

inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace fulcrum::metrics
