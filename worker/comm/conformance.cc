#include "worker/comm/conformance.h"

#include <random>
#include <vector>

#include "absl/strings/str_cat.h"

namespace epinfer {
namespace {

// Bytes that `src` sends `dst` at `step`: length and contents both derived from the seed.
int64_t Length(uint64_t seed, int step, int src, int dst, int size, int64_t large) {
  if (step == 3 && dst == (src + 1) % size) return large;
  std::mt19937_64 rng(seed * 1000003 + step * 7919 + src * 131 + dst);
  switch (rng() % 4) {
    case 0:
      return 0;
    case 1:
      return static_cast<int64_t>(rng() % 16);
    case 2:
      return static_cast<int64_t>(rng() % 4096);
    default:
      return static_cast<int64_t>(rng() % (256 << 10));
  }
}

uint8_t Byte(uint64_t seed, int step, int src, int dst, int64_t i) {
  return static_cast<uint8_t>((i * 2654435761u) ^ (seed + step * 31 + src * 7 + dst * 13));
}

}  // namespace

absl::Status RunConformance(Communicator& comm, const ConformanceOptions& o) {
  const int n = comm.size(), me = comm.rank();
  for (int step = 0; step < o.steps; ++step) {
    if (o.on_step) o.on_step(step);
    const absl::Time deadline = absl::Now() + o.timeout;
    std::vector<std::vector<uint8_t>> send(static_cast<size_t>(n));
    std::vector<absl::Span<const uint8_t>> spans;
    for (int dst = 0; dst < n; ++dst) {
      send[dst].resize(static_cast<size_t>(Length(o.seed, step, me, dst, n, o.large_bytes)));
      for (size_t i = 0; i < send[dst].size(); ++i) send[dst][i] = Byte(o.seed, step, me, dst, i);
      spans.emplace_back(send[dst]);
    }
    std::vector<std::vector<uint8_t>> recv;
    absl::Status status = comm.AllToAllV(spans, &recv, deadline);
    if (!status.ok()) return status;
    if (recv.size() != static_cast<size_t>(n)) {
      return absl::InternalError(absl::StrCat("step ", step, ": ", recv.size(), " parts"));
    }
    for (int src = 0; src < n; ++src) {
      const int64_t expected = Length(o.seed, step, src, me, n, o.large_bytes);
      if (static_cast<int64_t>(recv[src].size()) != expected) {
        return absl::DataLossError(absl::StrCat("step ", step, ": ", recv[src].size(),
                                                " bytes from rank ", src, ", expected ", expected));
      }
      for (int64_t i = 0; i < expected; ++i) {
        if (recv[src][i] != Byte(o.seed, step, src, me, i)) {
          return absl::DataLossError(absl::StrCat("step ", step, ": byte ", i, " from rank ", src,
                                                  " is wrong"));
        }
      }
    }
    // All-gather of a rank-specific 24-byte record.
    std::vector<uint8_t> record(24);
    for (size_t i = 0; i < record.size(); ++i) record[i] = Byte(o.seed, step, me, -1, i);
    std::vector<uint8_t> all;
    status = comm.AllGather(record, &all, deadline);
    if (!status.ok()) return status;
    if (all.size() != record.size() * n) {
      return absl::DataLossError(absl::StrCat("step ", step, ": all-gather of ", all.size(),
                                              " bytes"));
    }
    for (int src = 0; src < n; ++src) {
      for (size_t i = 0; i < record.size(); ++i) {
        if (all[src * record.size() + i] != Byte(o.seed, step, src, -1, i)) {
          return absl::DataLossError(absl::StrCat("step ", step, ": all-gather byte from rank ",
                                                  src, " is wrong"));
        }
      }
    }
    status = comm.Barrier(deadline);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

}  // namespace epinfer
