#pragma once
// The stats listener's dashboard (GET /): one page of plain HTML, CSS and JavaScript, no CDN,
// that polls /api/state every second and shows the whole site (nodes, rates, latency, database
// members, charts, state changes); and its icon (GET /favicon.ico).
#include <string_view>

namespace fulcrum::lb {

std::string_view dashboardPage();
// An SVG icon (served as image/svg+xml; browsers take it for /favicon.ico).
std::string_view dashboardIcon();

}  // namespace fulcrum::lb
