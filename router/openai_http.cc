#include "router/openai_http.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <deque>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "httplib.h"
#include "router/completions_service.h"

namespace epinfer {
namespace {

using Endpoint = OpenAiRequest::Endpoint;

// Notices a client that closed its connection, so that its request is cancelled and the worker
// frees the sequence. httplib 0.11 gives handlers no socket: it is found once per request as the
// descriptor whose address pair is the request's (a scan of /proc/self/fd).
class ConnectionProbe {
 public:
  explicit ConnectionProbe(const httplib::Request& req) {
    std::unique_ptr<DIR, int (*)(DIR*)> dir(opendir("/proc/self/fd"), &closedir);
    if (dir == nullptr) return;
    while (const dirent* entry = readdir(dir.get())) {
      char* end = nullptr;
      const long fd = std::strtol(entry->d_name, &end, 10);
      if (end == entry->d_name || *end != '\0') continue;
      if (Matches(static_cast<int>(fd), req)) {
        fd_ = static_cast<int>(fd);
        return;
      }
    }
  }

  // True once the peer has closed (or reset) the connection; false when unknown.
  bool Closed() const {
    if (fd_ < 0) return false;
    pollfd p{fd_, POLLRDHUP, 0};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
  }

 private:
  static int PortOf(const sockaddr_storage& address) {
    if (address.ss_family == AF_INET) {
      return ntohs(reinterpret_cast<const sockaddr_in&>(address).sin_port);
    }
    if (address.ss_family == AF_INET6) {
      return ntohs(reinterpret_cast<const sockaddr_in6&>(address).sin6_port);
    }
    return -1;
  }
  // The ports first (cheap), then the peer's host as httplib writes it (numeric getnameinfo).
  static bool Matches(int fd, const httplib::Request& req) {
    sockaddr_storage peer{}, local{};
    socklen_t peer_length = sizeof(peer), local_length = sizeof(local);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_length) != 0 ||
        PortOf(local) != req.local_port ||
        getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_length) != 0 ||
        PortOf(peer) != req.remote_port) {
      return false;
    }
    char host[NI_MAXHOST];
    return getnameinfo(reinterpret_cast<const sockaddr*>(&peer), peer_length, host, sizeof(host),
                       nullptr, 0, NI_NUMERICHOST) == 0 &&
           req.remote_addr == host;
  }

  int fd_ = -1;
};

// A streamed answer in flight: Completions::Run on a thread of its own fills the queue; the
// connection's thread (httplib's content provider) drains it as SSE events.
class ChunkQueue final : public CompletionSink {
 public:
  ~ChunkQueue() override {
    ConsumerGone();
    if (runner_.joinable()) runner_.join();
  }

  template <typename F>
  void Start(F run) {
    runner_ = std::thread([this, run = std::move(run)]() mutable {
      absl::Status status = run(this);
      absl::MutexLock lock(&mu_);
      status_ = std::move(status);
      done_ = true;
    });
  }

  bool Write(const v1::CompletionChunk& chunk) override {
    absl::MutexLock lock(&mu_);
    if (consumer_gone_) return false;
    chunks_.push_back(chunk);
    return true;
  }

  void ConsumerGone() {
    absl::MutexLock lock(&mu_);
    consumer_gone_ = true;
  }
  bool consumer_gone() {
    absl::MutexLock lock(&mu_);
    return consumer_gone_;
  }

  // Waits at most `timeout` for chunks or the end; takes the chunks there are. `done` is set
  // once Run has returned and every chunk has been taken.
  std::deque<v1::CompletionChunk> Take(absl::Duration timeout, bool* done, absl::Status* status) {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(this, &ChunkQueue::Ready), timeout);
    std::deque<v1::CompletionChunk> taken;
    taken.swap(chunks_);
    *done = done_;
    *status = status_;
    return taken;
  }

  // Waits at most `timeout` for the first chunk or the end; true if either came.
  bool AwaitFirst(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(this, &ChunkQueue::Ready), timeout);
  }

 private:
  bool Ready() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !chunks_.empty() || done_; }

  absl::Mutex mu_;
  std::deque<v1::CompletionChunk> chunks_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  bool consumer_gone_ ABSL_GUARDED_BY(mu_) = false;
  std::thread runner_;
};

// Counts a request as in flight for as long as it lives.
class InFlight {
 public:
  explicit InFlight(std::atomic<int>& count) : count_(count) { ++count_; }
  ~InFlight() { --count_; }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

 private:
  std::atomic<int>& count_;
};

constexpr absl::Duration kPollInterval = absl::Milliseconds(100);

}  // namespace

OpenAiHttpServer::OpenAiHttpServer(Completions& completions, RouterMetrics* metrics,
                                   OpenAiHttpOptions options)
    : completions_(completions),
      metrics_(metrics),
      options_(std::move(options)),
      server_(std::make_unique<httplib::Server>()) {}

OpenAiHttpServer::~OpenAiHttpServer() { Shutdown(absl::ZeroDuration()); }

void OpenAiHttpServer::Shutdown(absl::Duration drain) {
  if (!listener_.joinable()) return;
  // httplib's stop() cuts streams short, so it waits until they have ended or the drain is over.
  draining_ = true;
  const absl::Time until = absl::Now() + drain;
  while (in_flight_.load() > 0 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(10));
  cancel_all_ = true;
  server_->stop();
  listener_.join();  // bounded: what is left stops at its next token, or at its deadline
}

absl::StatusOr<std::unique_ptr<OpenAiHttpServer>> OpenAiHttpServer::Start(
    const std::string& address, Completions& completions, RouterMetrics* metrics,
    OpenAiHttpOptions options) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("http address ", address, ": no port"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  const int requested_port = std::atoi(address.c_str() + colon + 1);

  auto server = std::make_unique<OpenAiHttpServer>(completions, metrics, std::move(options));
  httplib::Server& http = *server->server_;
  OpenAiHttpServer* self = server.get();
  // A peer that resets a connection mid-answer must not kill the router with SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);

  const int threads = std::max(1, self->options_.threads);
  // httplib owns the queue it is handed (its API takes a raw pointer).
  http.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  // SO_REUSEADDR only: httplib's default adds SO_REUSEPORT, which would let a second router
  // share a port in use instead of failing to start.
  http.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  http.set_tcp_nodelay(true);
  http.set_payload_max_length(self->options_.max_body_bytes);

  auto reply_error = [](httplib::Response& res, const absl::Status& status, Endpoint endpoint) {
    res.status = HttpStatusOf(status.code());
    if (status.code() == absl::StatusCode::kUnauthenticated) {
      res.set_header("WWW-Authenticate", "Bearer");
    }
    res.set_content(OpenAiErrorJson(status, endpoint), "application/json");
  };
  auto count = [self](const char* method, absl::StatusCode code) {
    if (self->metrics_) self->metrics_->Request(method, absl::StatusCodeToString(code));
  };
  auto authorize = [self](const httplib::Request& req) -> absl::Status {
    if (self->options_.api_key.empty()) return absl::OkStatus();
    if (!BearerMatches(req.get_header_value("Authorization"), self->options_.api_key)) {
      return absl::UnauthenticatedError(
          "missing or wrong API key (header Authorization: Bearer <key>)");
    }
    return absl::OkStatus();
  };

  http.Get("/v1/models", [=](const httplib::Request& req, httplib::Response& res) {
    if (absl::Status auth = authorize(req); !auth.ok()) {
      count("http_models", auth.code());
      return reply_error(res, auth, Endpoint::kCompletions);
    }
    v1::ListModelsResponse models;
    self->completions_.ListModels(&models);
    res.set_content(OpenAiModelList(models), "application/json");
    count("http_models", absl::StatusCode::kOk);
  });

  auto complete = [=](Endpoint endpoint, const char* method, const httplib::Request& req,
                      httplib::Response& res) {
    const absl::Time start = absl::Now();
    // Held until the answer has been sent (by the stream, for a streamed one).
    auto in_flight = std::make_shared<const InFlight>(self->in_flight_);
    if (self->draining_) {
      count(method, absl::StatusCode::kUnavailable);
      return reply_error(res, absl::UnavailableError("the router is shutting down"), endpoint);
    }
    if (absl::Status auth = authorize(req); !auth.ok()) {
      count(method, auth.code());
      return reply_error(res, auth, endpoint);
    }
    absl::StatusOr<OpenAiRequest> parsed = ParseOpenAiRequest(endpoint, req.body);
    if (!parsed.ok()) {
      count(method, parsed.status().code());
      return reply_error(res, parsed.status(), endpoint);
    }
    const ServedModel& model = self->completions_.model();
    OpenAiAnswerFormat format;
    format.endpoint = endpoint;
    format.model = model.id;
    format.created_unix_s = absl::ToUnixSeconds(start);
    format.logprobs = parsed->request.sampling().has_logprobs();
    format.return_token_ids = parsed->return_token_ids;
    format.include_usage = parsed->include_usage;
    format.reasoning_model = model.chat_template && model.chat_template->opens_reasoning();
    const absl::Time deadline = start + self->options_.request_timeout;

    if (!parsed->stream) {
      // Each chunk asks the connection whether the client is still there.
      class ProbingSink final : public CompletionSink {
       public:
        ProbingSink(const ConnectionProbe& probe, const std::atomic<bool>& cancel_all)
            : probe_(probe), cancel_all_(cancel_all) {}
        bool Write(const v1::CompletionChunk&) override { return !cancel_all_ && !probe_.Closed(); }

       private:
        const ConnectionProbe& probe_;
        const std::atomic<bool>& cancel_all_;
      };
      const ConnectionProbe probe(req);
      ProbingSink sink(probe, self->cancel_all_);
      CallControl call;
      call.deadline = deadline;
      call.cancelled = [&] { return self->cancel_all_.load() || probe.Closed(); };
      v1::CompletionResponse response;
      absl::Status status = self->completions_.Run(parsed->request, call, &sink, &response);
      count(method, status.code());
      if (!status.ok()) return reply_error(res, status, endpoint);
      res.set_content(format.Unary(response), "application/json");
      return;
    }

    // Streamed: Run on a thread of its own; this thread answers the HTTP status once the first
    // chunk (200, SSE) or the end (an error before any token: its status) has come.
    auto queue = std::make_shared<ChunkQueue>();
    ChunkQueue* q = queue.get();
    queue->Start(
        [self, request = parsed->request, deadline, method, count, q](CompletionSink* sink) {
          CallControl call;
          call.deadline = deadline;
          call.cancelled = [self, q] { return self->cancel_all_.load() || q->consumer_gone(); };
          v1::CompletionResponse response;
          absl::Status status = self->completions_.Run(request, call, sink, &response);
          count(method, status.code());
          return status;
        });
    auto probe = std::make_shared<const ConnectionProbe>(req);
    // Bounded: Run ends by the request's deadline.
    while (!queue->AwaitFirst(kPollInterval) && absl::Now() < deadline + absl::Seconds(5)) {
      if (probe->Closed()) {
        queue->ConsumerGone();
        res.status = 499;  // nobody reads it: the client left
        return;
      }
    }
    bool done = false;
    absl::Status status;
    std::deque<v1::CompletionChunk> first = queue->Take(absl::ZeroDuration(), &done, &status);
    if (first.empty()) {
      if (status.ok()) status = absl::DeadlineExceededError("no answer by the request's deadline");
      return reply_error(res, status, endpoint);
    }
    auto renderer = std::make_shared<OpenAiEventStream>(format);
    auto pending = std::make_shared<std::deque<v1::CompletionChunk>>(std::move(first));
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [queue, probe, renderer, pending, in_flight](size_t, httplib::DataSink& sink) {
          bool done = false;
          absl::Status status;
          std::deque<v1::CompletionChunk> chunks =
              pending->empty() ? queue->Take(kPollInterval, &done, &status) : std::move(*pending);
          pending->clear();
          std::string events;
          for (const v1::CompletionChunk& chunk : chunks) events += renderer->Render(chunk);
          if (done) events += renderer->End(status);
          if (!events.empty() && !sink.write(events.data(), events.size())) {
            queue->ConsumerGone();
            return false;
          }
          if (done) {
            sink.done();
            return true;
          }
          if (probe->Closed()) {
            queue->ConsumerGone();
            return false;
          }
          return true;
        },
        [queue](bool) { queue->ConsumerGone(); });
  };

  http.Post("/v1/completions", [=](const httplib::Request& req, httplib::Response& res) {
    complete(Endpoint::kCompletions, "http_completions", req, res);
  });
  http.Post("/v1/chat/completions", [=](const httplib::Request& req, httplib::Response& res) {
    complete(Endpoint::kChatCompletions, "http_chat_completions", req, res);
  });

  // Routing and framing failures (unknown path 404, body too large 413, ...) in OpenAI's shape.
  http.set_error_handler(
      httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        const absl::Status status =
            res.status == 404
                ? absl::NotFoundError(absl::StrCat("no route ", req.method, " ", req.path))
                : absl::InvalidArgumentError(absl::StrCat("HTTP ", res.status));
        res.set_content(OpenAiErrorJson(status, Endpoint::kCompletions), "application/json");
        return httplib::Server::HandlerResponse::Handled;
      }));
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res,
                                std::exception_ptr) {
    res.status = 500;
    res.set_content(OpenAiErrorJson(absl::InternalError("internal error"), Endpoint::kCompletions),
                    "application/json");
  });

  const int port = requested_port == 0
                       ? http.bind_to_any_port(host)
                       : (http.bind_to_port(host, requested_port) ? requested_port : -1);
  if (port <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", address, " (--http_port): ", std::strerror(errno)));
  }
  server->port_ = port;
  server->listener_ = std::thread([self] { self->server_->listen_after_bind(); });
  // stop() only takes effect once the server runs: wait for it, so Shutdown cannot be missed.
  const absl::Time ready_by = absl::Now() + absl::Seconds(10);
  while (!http.is_running() && absl::Now() < ready_by) absl::SleepFor(absl::Milliseconds(1));
  if (!http.is_running()) return absl::InternalError("the HTTP server did not start");
  return server;
}

}  // namespace epinfer
