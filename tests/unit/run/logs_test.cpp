#include "run/logs.h"

#include <gtest/gtest.h>

namespace fulcrum::run {
namespace {

TEST(NodeLogPath, ReplacesEveryNodePlaceholder) {
  EXPECT_EQ(nodeLogPath("/var/log/fulcrum/{node}.access.log", "lb-1"), "/var/log/fulcrum/lb-1.access.log");
  EXPECT_EQ(nodeLogPath("/l/{node}/{node}.log", "w"), "/l/w/w.log");
  EXPECT_EQ(nodeLogPath("/l/plain.log", "w"), "/l/plain.log");
  // A name holding the placeholder itself is not expanded again.
  EXPECT_EQ(nodeLogPath("{node}-{node}", "{node}"), "{node}-{node}");
}

TEST(OpenLogs, RefusesAnUnknownFormatAndAnUnopenableFile) {
  std::string error;
  EXPECT_FALSE(openLogs({.access_log_format = "xml"}, "text", {}, "n", {}, error));
  EXPECT_NE(error.find("off, text or json"), std::string::npos) << error;
  error.clear();
  EXPECT_FALSE(openLogs({}, "text", "/nonexistent-dir/a.log", "n", {}, error));
  EXPECT_NE(error.find("/nonexistent-dir/a.log"), std::string::npos) << error;
  EXPECT_TRUE(openLogs({}, "off", "/nonexistent-dir/a.log", "n", {}, error)) << error;  // off opens nothing
}

}  // namespace
}  // namespace fulcrum::run
