#include "metrics/process.h"

#include <gtest/gtest.h>

#include <string>

namespace fulcrum {
namespace {

// A real line's shape (proc(5)): utime 14, stime 15, starttime 22, vsize 23, rss 24.
constexpr std::string_view kStat =
    "4242 (fulcrum) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 25 0 0 20 0 5 0 987654 "
    "123456789 2048 18446744073709551615 1 1 0 0 0 0 0 4096 17987 0 0 0 17 1 0 0 0 0 0\n";

TEST(ProcStat, ReadsTheFieldsTheProcessSeriesNeed) {
  auto s = metrics::parseProcStat(kStat);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->utime_ticks, 150u);
  EXPECT_EQ(s->stime_ticks, 25u);
  EXPECT_EQ(s->start_ticks, 987654u);
  EXPECT_EQ(s->vsize_bytes, 123456789u);
  EXPECT_EQ(s->rss_pages, 2048u);
}

TEST(ProcStat, CommandNameWithSpacesAndParentheses) {
  std::string line(kStat);
  line.replace(line.find("(fulcrum)"), 9, "(a) b (c))");
  auto s = metrics::parseProcStat(line);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->utime_ticks, 150u);
  EXPECT_EQ(s->rss_pages, 2048u);
}

TEST(ProcStat, RefusesTruncatedOrGarbage) {
  EXPECT_FALSE(metrics::parseProcStat(""));
  EXPECT_FALSE(metrics::parseProcStat("4242 fulcrum S 1"));
  EXPECT_FALSE(metrics::parseProcStat(kStat.substr(0, 60)));
  std::string bad(kStat);
  bad.replace(bad.find(" 150 "), 5, " x50 ");
  EXPECT_FALSE(metrics::parseProcStat(bad));
}

TEST(ProcStat, BootTimeFromProcStat) {
  EXPECT_EQ(metrics::parseBootTime("cpu  1 2 3\nintr 5\nbtime 1764680000\nprocesses 9\n"), 1764680000u);
  EXPECT_FALSE(metrics::parseBootTime("cpu  1 2 3\n"));
  EXPECT_FALSE(metrics::parseBootTime("btime soon\n"));
}

TEST(ProcessMetrics, WritesTheStandardFamiliesForThisProcess) {
  metrics::PrometheusWriter w;
  metrics::writeProcessMetrics(w);
  const std::string& text = w.text();
  for (const char* name : {"process_cpu_seconds_total ", "process_resident_memory_bytes ",
                           "process_virtual_memory_bytes ", "process_open_fds ", "process_max_fds ",
                           "process_start_time_seconds ", "fulcrum_build_info{version=\""}) {
    EXPECT_NE(text.find(std::string("\n") + name), std::string::npos) << name << " in\n" << text;
  }
  // This very process has resident memory and at least stdin/stdout/stderr open.
  auto value = [&](const std::string& name) {
    size_t at = text.find("\n" + name + " ");
    return at == std::string::npos ? -1.0 : std::stod(text.substr(at + name.size() + 2));
  };
  EXPECT_GT(value("process_resident_memory_bytes"), 1e5);
  EXPECT_GE(value("process_open_fds"), 3.0);
  EXPECT_GT(value("process_start_time_seconds"), 1.5e9);
}

}  // namespace
}  // namespace fulcrum
