// Encode throughput of one tokenizer on one text file, single-threaded: the best of N passes.
//   encode_bench TOKENIZER CORPUS_FILE [REPEATS]
// Prints {"bytes": .., "tokens": .., "seconds": .., "mb_per_s": ..} (MB = 10^6 bytes).
// compare.py runs it beside the JavaScript reference on the same file.
#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "absl/strings/numbers.h"
#include "tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  int repeats = 3;
  if (argc < 3 || argc > 4 || (argc == 4 && !absl::SimpleAtoi(argv[3], &repeats))) {
    std::cerr << "usage: encode_bench TOKENIZER CORPUS_FILE [REPEATS]\n";
    return 2;
  }
  auto tokenizer = epinfer::Tokenizer::Load(argv[1]);
  if (!tokenizer.ok()) {
    std::cerr << tokenizer.status() << "\n";
    return 1;
  }
  std::ifstream in(argv[2], std::ios::binary);
  if (!in) {
    std::cerr << "cannot read " << argv[2] << "\n";
    return 1;
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  double best = 1e30;
  size_t tokens = 0;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    epinfer::EncodeOptions options;
    options.allow_special_tokens = true;  // as the reference does
    auto ids = (*tokenizer)->Encode(text, options);
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    if (!ids.ok()) {
      std::cerr << ids.status() << "\n";
      return 1;
    }
    tokens = ids->size();
    best = std::min(best, elapsed.count());
  }
  std::cout << "{\"bytes\": " << text.size() << ", \"tokens\": " << tokens
            << ", \"seconds\": " << best << ", \"mb_per_s\": " << text.size() / best / 1e6
            << "}\n";
  return 0;
}
