// parseRequestHead on a typical browser request (~400 bytes, 11 headers) and on curl's minimal
// request, plus chunked body decoding. Reports; nothing judges the numbers.
#include <benchmark/benchmark.h>

#include <string>

#include "http/parser.h"

namespace {

using namespace fulcrum::http;

const std::string kBrowser =
    "GET /assets/js/app.min.js?v=20240301 HTTP/1.1\r\n"
    "Host: www.example.com\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0\r\n"
    "Accept: */*\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Referer: https://www.example.com/products/index.html\r\n"
    "Connection: keep-alive\r\n"
    "Cookie: session=8f2a1c9e4b7d6a3f; theme=dark; _ga=GA1.2.1234567890.1700000000\r\n"
    "Sec-Fetch-Dest: script\r\n"
    "Sec-Fetch-Mode: no-cors\r\n"
    "Sec-Fetch-Site: same-origin\r\n"
    "\r\n";

const std::string kCurl =
    "GET / HTTP/1.1\r\n"
    "Host: localhost:8080\r\n"
    "User-Agent: curl/7.88.1\r\n"
    "Accept: */*\r\n"
    "\r\n";

void parseHead(benchmark::State& state, const std::string& request) {
  RequestHead head;
  Limits limits;
  for (auto _ : state) {
    ParseResult result = parseRequestHead(request, limits, head);
    benchmark::DoNotOptimize(result);
    benchmark::DoNotOptimize(head.headers.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * request.size()));
  state.counters["head_bytes"] = static_cast<double>(request.size());
}

void BM_ParseRequestBrowser(benchmark::State& state) {
  parseHead(state, kBrowser);
}
void BM_ParseRequestCurl(benchmark::State& state) {
  parseHead(state, kCurl);
}

void BM_ParseResponse(benchmark::State& state) {
  const std::string response =
      "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
      "Content-Type: text/html; charset=utf-8\r\nContent-Length: 612\r\nConnection: keep-alive\r\n"
      "ETag: \"64d39a40-264\"\r\nAccept-Ranges: bytes\r\n\r\n";
  ResponseHead head;
  Limits limits;
  for (auto _ : state) {
    ParseResult result = parseResponseHead(response, limits, Method::Get, head);
    benchmark::DoNotOptimize(result);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * response.size()));
}

void BM_DecodeChunked(benchmark::State& state) {
  std::string body;
  for (int i = 0; i < 16; ++i) {
    body += "400\r\n" + std::string(1024, 'x') + "\r\n";
  }
  body += "0\r\n\r\n";
  BodyDecoder decoder;
  for (auto _ : state) {
    decoder.reset(BodyKind::Chunked, 0, 0);
    std::string_view rest = body;
    while (!decoder.done()) {
      BodyStep step = decoder.step(rest);
      benchmark::DoNotOptimize(step.payload);
      rest.remove_prefix(step.consumed);
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
}

BENCHMARK(BM_ParseRequestBrowser);
BENCHMARK(BM_ParseRequestCurl);
BENCHMARK(BM_ParseResponse);
BENCHMARK(BM_DecodeChunked);

}  // namespace
