#include "worker/kernels/swiglu.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "worker/kernels/random_weight.h"

namespace epinfer {
namespace {

struct Mlp {
  RandomWeight gate, up, down;
};

Mlp MakeMlp(DType dtype, int64_t hidden, int64_t inter, uint32_t seed) {
  return {MakeRandomWeight(dtype, inter, hidden, seed), MakeRandomWeight(dtype, inter, hidden, seed + 1),
          MakeRandomWeight(dtype, hidden, inter, seed + 2)};
}

// down(silu(gate · x) ⊙ (up · x)) in double precision from the decoded weights.
std::vector<double> Reference(const Mlp& m, const std::vector<float>& x, int64_t n) {
  const int64_t hidden = m.gate.w.cols, inter = m.gate.w.rows;
  std::vector<double> y(static_cast<size_t>(n * hidden), 0.0), act(static_cast<size_t>(inter));
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < inter; ++i) {
      double g = 0, u = 0;
      for (int64_t k = 0; k < hidden; ++k) {
        g += m.gate.dense[i * hidden + k] * x[t * hidden + k];
        u += m.up.dense[i * hidden + k] * x[t * hidden + k];
      }
      act[i] = g / (1 + std::exp(-g)) * u;
    }
    for (int64_t o = 0; o < hidden; ++o) {
      for (int64_t i = 0; i < inter; ++i) y[t * hidden + o] += m.down.dense[o * inter + i] * act[i];
    }
  }
  return y;
}

TEST(SwiGluBatchTest, EveryJobEqualsItsOwnMlp) {
  // Experts of different dtypes and sizes, one with more rows than the streaming path takes.
  const Mlp a = MakeMlp(DType::kBF16, 96, 160, 1), b = MakeMlp(DType::kF8E4M3, 96, 200, 10);
  const struct {
    const Mlp* mlp;
    int64_t n;
  } cases[] = {{&a, 1}, {&b, 3}, {&a, 20}, {&b, 0}};
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  std::vector<std::vector<float>> xs, ys;
  std::vector<SwiGluJob> jobs;
  for (const auto& c : cases) {
    xs.emplace_back(static_cast<size_t>(c.n * 96));
    for (float& v : xs.back()) v = normal(rng);
    ys.emplace_back(static_cast<size_t>(c.n * 96), NAN);
  }
  for (size_t j = 0; j < std::size(cases); ++j) {
    const Mlp& m = *cases[j].mlp;
    jobs.push_back({&m.gate.w, &m.up.w, &m.down.w, xs[j].data(), cases[j].n, ys[j].data()});
  }
  SwiGluBatch(jobs);
  for (size_t j = 0; j < std::size(cases); ++j) {
    const std::vector<double> want = Reference(*cases[j].mlp, xs[j], cases[j].n);
    double scale = 1e-3;
    for (double v : want) scale = std::max(scale, std::fabs(v));
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_NEAR(ys[j][i], want[i], 1e-5 * scale) << "job " << j << " value " << i;
    }
  }
}

}  // namespace
}  // namespace epinfer
