#include "common/metrics.h"

#include <dirent.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/version.h"
#include "prometheus/gauge.h"
#include "prometheus/metric_family.h"

namespace epinfer {
namespace {

// process_* metrics as Prometheus' client libraries define them, read from /proc/self.
class ProcessCollector : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override {
    std::vector<prometheus::MetricFamily> families;
    const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
    const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
    std::ifstream stat_file("/proc/self/stat");
    std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
    // Fields after the parenthesised command name; utime/stime are fields 14/15, starttime 22,
    // vsize 23, rss 24 (man 5 proc).
    size_t close = stat.rfind(')');
    if (close != std::string::npos && close + 2 < stat.size()) {
      std::vector<std::string> f = absl::StrSplit(stat.substr(close + 2), ' ');
      if (f.size() > 21) {
        const double cpu = (std::stod(f[11]) + std::stod(f[12])) / ticks;
        families.push_back(Make("process_cpu_seconds_total",
                                "Total user and system CPU time spent in seconds.",
                                prometheus::MetricType::Counter, cpu));
        families.push_back(Make("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                                prometheus::MetricType::Gauge, std::stod(f[20])));
        families.push_back(Make("process_resident_memory_bytes",
                                "Resident memory size in bytes.", prometheus::MetricType::Gauge,
                                std::stod(f[21]) * page));
        families.push_back(Make("process_start_time_seconds",
                                "Start time of the process since unix epoch in seconds.",
                                prometheus::MetricType::Gauge,
                                BootTimeSeconds() + std::stod(f[19]) / ticks));
      }
    }
    families.push_back(Make("process_open_fds", "Number of open file descriptors.",
                            prometheus::MetricType::Gauge, CountOpenFds()));
    return families;
  }

 private:
  static prometheus::MetricFamily Make(std::string name, std::string help,
                                       prometheus::MetricType type, double value) {
    prometheus::MetricFamily family{std::move(name), std::move(help), type, {}};
    prometheus::ClientMetric metric;
    if (type == prometheus::MetricType::Counter) {
      metric.counter.value = value;
    } else {
      metric.gauge.value = value;
    }
    family.metric.push_back(std::move(metric));
    return family;
  }

  static double BootTimeSeconds() {
    std::ifstream in("/proc/stat");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("btime ", 0) == 0) return std::stod(line.substr(6));
    }
    return 0;
  }

  static double CountOpenFds() {
    DIR* dir = opendir("/proc/self/fd");
    if (dir == nullptr) return 0;
    double n = 0;
    while (dirent* entry = readdir(dir)) {
      if (entry->d_name[0] != '.') ++n;
    }
    closedir(dir);
    return n - 1;  // the directory stream's own descriptor
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(absl::string_view bind_address,
                                                                     absl::string_view component) {
  auto server = std::make_unique<MetricsServer>(PrivateTag{});
  server->registry_ = std::make_shared<prometheus::Registry>();
  try {
    server->exposer_ = std::make_unique<prometheus::Exposer>(std::string(bind_address), 2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("metrics server: cannot listen on ", bind_address, ": ", e.what()));
  }
  std::vector<int> ports = server->exposer_->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(absl::StrCat("metrics server: no port bound on ", bind_address));
  }
  server->port_ = ports.front();
  prometheus::BuildGauge()
      .Name("epinfer_build_info")
      .Help("Constant 1; labels carry the epinfer version and the component.")
      .Register(*server->registry_)
      .Add({{"version", kVersion}, {"component", std::string(component)}})
      .Set(1);
  server->process_collector_ = std::make_shared<ProcessCollector>();
  server->exposer_->RegisterCollectable(server->registry_);
  server->exposer_->RegisterCollectable(server->process_collector_);
  return server;
}

const std::vector<double>& LatencyBucketsSeconds() {
  static const std::vector<double> buckets = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                              0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                              1,      2.5,     5,      10,    30,     60};
  return buckets;
}

}  // namespace epinfer
