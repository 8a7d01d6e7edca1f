#ifndef EPINFER_ROUTER_OPENAI_HTTP_H_
#define EPINFER_ROUTER_OPENAI_HTTP_H_

#include <atomic>
#include <cstddef>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "router/completions.h"
#include "router/openai_format.h"
#include "router/router_metrics.h"

namespace httplib {
class Server;
}

namespace epinfer {

struct OpenAiHttpOptions {
  // When set, every request must carry "Authorization: Bearer <api_key>".
  std::string api_key;
  // The deadline of each request: the OpenAI API carries none of its own.
  absl::Duration request_timeout = absl::Minutes(10);
  // Connections served at once; a streamed answer holds one for its whole length.
  int threads = 64;
  size_t max_body_bytes = 64 << 20;
};

// The OpenAI-compatible HTTP API over Completions: GET /v1/models, POST /v1/completions and
// POST /v1/chat/completions, unary JSON or Server-Sent Events (`stream: true`). Requests go
// through Completions::Run with a deadline and a probe for a client that closed its
// connection; every request is counted in RouterMetrics as method "http_<endpoint>".
class OpenAiHttpServer {
 public:
  // Binds "host:port" (port 0 picks a free one) and serves on threads of its own.
  static absl::StatusOr<std::unique_ptr<OpenAiHttpServer>> Start(const std::string& address,
                                                                 Completions& completions,
                                                                 RouterMetrics* metrics,
                                                                 OpenAiHttpOptions options);
  ~OpenAiHttpServer();

  int port() const { return port_; }

  // Refuses new requests (503); requests in flight get `drain` to finish, then are cancelled
  // and the server stops.
  void Shutdown(absl::Duration drain);

  // Public for make_unique; use Start().
  OpenAiHttpServer(Completions& completions, RouterMetrics* metrics, OpenAiHttpOptions options);

 private:
  Completions& completions_;
  RouterMetrics* metrics_;
  const OpenAiHttpOptions options_;
  std::unique_ptr<httplib::Server> server_;
  int port_ = 0;
  std::thread listener_;
  std::atomic<bool> draining_{false};    // new requests are refused with 503
  std::atomic<int> in_flight_{0};        // requests being answered, streams included
  std::atomic<bool> cancel_all_{false};  // past the drain: requests in flight stop
};

}  // namespace epinfer

#endif  // EPINFER_ROUTER_OPENAI_HTTP_H_
