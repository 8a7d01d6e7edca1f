#include "cli/serve_command.h"

#include <fstream>
#include <iostream>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/flags.h"
#include "common/shutdown.h"
#include "common/subprocess.h"
#include "epinfer/v1/completion.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "worker/flags.h"

ABSL_DECLARE_FLAG(int, workers);
ABSL_DECLARE_FLAG(int, port);
ABSL_DECLARE_FLAG(int, http_port);
ABSL_FLAG(std::string, run_dir, "",
          "serve: where the components' logs go; default a new /tmp/epinfer-serve-XXXXXX.");
ABSL_FLAG(int, threads_per_worker, 1, "serve: compute threads of each worker.");
ABSL_FLAG(std::string, prometheus_targets, "",
          "serve: write the components' /metrics addresses here (Prometheus file_sd JSON).");
ABSL_FLAG(bool, restart_workers, true, "serve: restart a worker that exits unexpectedly.");

namespace epinfer {
namespace {

constexpr char kUsage[] = "--model DIR --workers N [--port P] [--http_port H]";

// A started component and the ports its "listening" line announced.
struct Component {
  std::string name;
  std::vector<std::string> argv;
  std::string log;
  std::unique_ptr<Subprocess> process;
  std::map<std::string, int> ports;
};

absl::Status Start(Component& c) {
  Subprocess::Options options;
  options.output_path = c.log;
  absl::StatusOr<std::unique_ptr<Subprocess>> p = Subprocess::Start(c.argv, options);
  if (!p.ok()) return p.status();
  c.process = *std::move(p);
  return absl::OkStatus();
}

// Waits for the component's "<name> listening a=host:port ..." log line.
absl::Status WaitListening(Component& c, absl::Time deadline) {
  const std::regex line(R"((\w+) listening((?: \w+=[^ \n]+)+))");
  const std::regex item(R"((\w+)=[^ \n]*:(\d+))");
  while (true) {
    std::ifstream in(c.log);
    std::stringstream text;
    text << in.rdbuf();
    const std::string s = text.str();
    std::smatch m;
    if (std::regex_search(s, m, line)) {
      const std::string items = m[2];
      for (std::sregex_iterator it(items.begin(), items.end(), item), end; it != end; ++it) {
        c.ports[(*it)[1]] = std::stoi((*it)[2]);
      }
      return absl::OkStatus();
    }
    if (std::optional<int> code = c.process->Poll()) {
      return absl::UnavailableError(absl::StrCat(c.name, " exited with ", *code, " (log: ", c.log,
                                                 "):\n", s.substr(s.size() > 2000 ? s.size() - 2000 : 0)));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(c.name, " did not start (log: ", c.log, ")"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// Waits until the router reports an EP group of `workers` ranks serving.
absl::Status WaitServing(const std::string& target, int workers, absl::Time deadline) {
  auto stub = v1::Completions::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  while (true) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::ListModelsResponse models;
    if (stub->ListModels(&context, {}, &models).ok() && models.models_size() > 0 &&
        static_cast<int>(models.models(0).num_ranks()) == workers) {
      return absl::OkStatus();
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError("the EP group did not form in time (see the worker logs)");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

absl::Status WriteTargets(const std::string& path, const std::vector<Component*>& components) {
  std::ofstream out(path + ".tmp");
  out << "[";
  bool first = true;
  for (const Component* c : components) {
    auto it = c->ports.find("metrics");
    if (it == c->ports.end()) continue;
    out << (first ? "" : ",") << "\n  {\"targets\": [\"127.0.0.1:" << it->second
        << "\"], \"labels\": {\"component\": \"" << c->name << "\"}}";
    first = false;
  }
  out << "\n]\n";
  out.close();
  if (!out || std::rename((path + ".tmp").c_str(), path.c_str()) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("--prometheus_targets: cannot write ", path));
  }
  return absl::OkStatus();
}

absl::Status Serve(ShutdownSignal& signal) {
  const std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) return absl::InvalidArgumentError("--model is required");
  const int workers = absl::GetFlag(FLAGS_workers);
  if (workers < 1 || workers > 64) return absl::InvalidArgumentError("--workers must be in 1..64");
  int port = absl::GetFlag(FLAGS_port);
  if (port == -1) port = 50051;
  if (port < 0 || port > 65535) return absl::InvalidArgumentError("--port must be in 0..65535");
  std::string run_dir = absl::GetFlag(FLAGS_run_dir);
  if (run_dir.empty()) {
    char dir[] = "/tmp/epinfer-serve-XXXXXX";
    if (mkdtemp(dir) == nullptr) return absl::InternalError("cannot create a run directory");
    run_dir = dir;
  }
  const std::string self = Subprocess::SelfPath();
  const absl::Time deadline = absl::Now() + absl::Seconds(120);
  const std::vector<std::string> local = {"--bind=127.0.0.1", "--metrics_port=0"};

  Component router{"router", {self, "router", "--model=" + model, absl::StrCat("--workers=", workers),
                              absl::StrCat("--port=", port), "--cluster_port=0"},
                   run_dir + "/router.log"};
  router.argv.insert(router.argv.end(), local.begin(), local.end());
  if (const int http = absl::GetFlag(FLAGS_http_port); http != -1) {
    if (http < 0 || http > 65535) return absl::InvalidArgumentError("--http_port must be in 0..65535 or -1");
    router.argv.push_back(absl::StrCat("--http_port=", http));
  }
  if (absl::Status s = Start(router); !s.ok()) return s;
  if (absl::Status s = WaitListening(router, deadline); !s.ok()) return s;
  const std::string cluster = absl::StrCat("127.0.0.1:", router.ports["cluster"]);
  Component scheduler{"scheduler", {self, "scheduler", "--port=0", "--router=" + cluster},
                      run_dir + "/scheduler.log"};
  scheduler.argv.insert(scheduler.argv.end(), local.begin(), local.end());
  if (absl::Status s = Start(scheduler); !s.ok()) return s;
  if (absl::Status s = WaitListening(scheduler, deadline); !s.ok()) return s;
  const std::string scheduler_address = absl::StrCat("127.0.0.1:", scheduler.ports["grpc"]);
  std::vector<Component> ranks(static_cast<size_t>(workers));
  for (int i = 0; i < workers; ++i) {
    ranks[i] = {absl::StrCat("worker-", i),
                {self, "worker", "--model=" + model, "--router=" + cluster, "--port=0",
                 "--scheduler=" + scheduler_address,
                 absl::StrCat("--worker_id=worker-", i),
                 absl::StrCat("--threads=", absl::GetFlag(FLAGS_threads_per_worker)),
                 absl::StrCat("--kv_cache_mb=", absl::GetFlag(FLAGS_kv_cache_mb))},
                absl::StrCat(run_dir, "/worker-", i, ".log")};
    ranks[i].argv.insert(ranks[i].argv.end(), local.begin(), local.end());
    if (absl::Status s = Start(ranks[i]); !s.ok()) return s;
  }
  for (Component& w : ranks) {
    if (absl::Status s = WaitListening(w, deadline); !s.ok()) return s;
  }
  const std::string target = absl::StrCat("127.0.0.1:", router.ports["grpc"]);
  if (absl::Status s = WaitServing(target, workers, deadline); !s.ok()) return s;
  std::vector<Component*> all = {&router, &scheduler};
  for (Component& w : ranks) all.push_back(&w);
  if (const std::string path = absl::GetFlag(FLAGS_prometheus_targets); !path.empty()) {
    if (absl::Status s = WriteTargets(path, all); !s.ok()) return s;
  }
  std::cerr << "serve listening grpc=" << target << " cluster=" << cluster;
  if (router.ports.count("http")) std::cerr << " http=127.0.0.1:" << router.ports["http"];
  std::cerr << " workers=" << workers << " logs=" << run_dir << std::endl;

  // Supervise until Ctrl-C / SIGTERM: a worker that dies is restarted (it rejoins the group);
  // the router or the scheduler dying ends the cluster.
  absl::Status result = absl::OkStatus();
  while (!signal.Wait(absl::Milliseconds(200))) {
    if (std::optional<int> code = router.process->Poll()) {
      result = absl::UnavailableError(absl::StrCat("router exited with ", *code, " (", router.log, ")"));
      break;
    }
    for (Component& w : ranks) {
      std::optional<int> code = w.process->Poll();
      if (!code) continue;
      std::cerr << w.name << " exited with " << *code << "; "
                << (absl::GetFlag(FLAGS_restart_workers) ? "restarting" : "not restarting") << std::endl;
      if (!absl::GetFlag(FLAGS_restart_workers)) continue;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      if (absl::Status s = Start(w); !s.ok()) std::cerr << s << std::endl;
    }
  }
  // Workers drain first, then the scheduler and the router.
  for (Component& w : ranks) w.process->Signal(SIGTERM);
  for (Component& w : ranks) w.process->Stop(absl::Seconds(30));
  scheduler.process->Stop(absl::Seconds(10));
  router.process->Stop(absl::Seconds(10));
  std::cerr << "serve stopped" << std::endl;
  return result;
}

}  // namespace

int RunServe(int argc, char** argv) {
  ShutdownSignal signal;  // before any thread or child starts
  const std::vector<std::string> flags = {"model", "workers", "port", "http_port", "run_dir",
                                          "threads_per_worker", "kv_cache_mb",
                                          "prometheus_targets", "restart_workers"};
  std::vector<std::string> args = ParseFlagsOrExit(argc, argv, kUsage, flags);
  if (!args.empty()) ExitWithUsageError("serve", kUsage, "unexpected argument " + args[0], flags);
  absl::Status status = Serve(signal);
  if (status.ok()) return 0;
  std::cerr << "serve: " << status.message() << "\n";
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

}  // namespace epinfer
