// `tokenizer_tool`: the tokenizer library from the command line, for the reference tests and
// benchmarks (the user-facing commands are `epinfer tokenize` / `detokenize`).
//   tokenizer_tool tokenize|detokenize [flags]      as epinfer's
//   tokenizer_tool chat TOKENIZER_DIR [r1]          JSON lines {"messages": [...],
//                                                   "add_generation_prompt": b,
//                                                   "continue_final_message": b}
//                                                   -> {"text": ..., "ids": [...]}
//   tokenizer_tool train CORPUS_FILE VOCAB_SIZE OUT_DIR
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "nlohmann/json.hpp"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_cli.h"
#include "tokenizer/trainer.h"

namespace {

using json = nlohmann::json;
using epinfer::ChatMessage;

std::vector<ChatMessage> MessagesFromJson(const json& list) {
  std::vector<ChatMessage> messages;
  for (const json& m : list) {
    ChatMessage message;
    message.role = m.at("role").get<std::string>();
    if (m.contains("content") && !m["content"].is_null()) {
      message.content = m["content"].get<std::string>();
    }
    for (const json& call : m.value("tool_calls", json::array())) {
      epinfer::ToolCall tool;
      tool.type = call.value("type", "function");
      tool.name = call.at("function").at("name").get<std::string>();
      tool.arguments = call.at("function").at("arguments").get<std::string>();
      message.tool_calls.push_back(tool);
    }
    messages.push_back(std::move(message));
  }
  return messages;
}

int RunChat(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: chat TOKENIZER_DIR [r1]\n";
    return 2;
  }
  auto tokenizer = epinfer::Tokenizer::Load(argv[1]);
  if (!tokenizer.ok()) {
    std::cerr << tokenizer.status() << "\n";
    return 1;
  }
  const bool r1 = argc > 2 && std::string(argv[2]) == "r1";
  auto chat = r1 ? epinfer::ChatTemplate::Create(epinfer::DeepSeekR1ChatTemplate(),
                                                 (*tokenizer)->config().bos_token)
                 : epinfer::ChatTemplate::ForTokenizer(**tokenizer);
  if (!chat.ok()) {
    std::cerr << chat.status() << "\n";
    return 1;
  }
  std::string line;
  while (std::getline(std::cin, line)) {
    json out;
    try {
      const json request = json::parse(line);
      epinfer::ChatOptions options;
      options.add_generation_prompt = request.value("add_generation_prompt", false);
      options.continue_final_message = request.value("continue_final_message", false);
      const std::vector<ChatMessage> messages = MessagesFromJson(request.at("messages"));
      auto text = chat->Render(messages, options);
      auto ids = chat->Encode(**tokenizer, messages, options);
      if (text.ok() && ids.ok()) {
        out = {{"text", *text}, {"ids", *ids}};
      } else {
        out = {{"error", std::string((text.ok() ? ids.status() : text.status()).message())}};
      }
    } catch (const json::exception& e) {
      out = {{"error", e.what()}};
    }
    std::cout << out.dump() << "\n";
  }
  return 0;
}

int RunTrain(int argc, char** argv) {
  int vocab_size = 0;
  if (argc != 4 || !absl::SimpleAtoi(argv[2], &vocab_size)) {
    std::cerr << "usage: train CORPUS_FILE VOCAB_SIZE OUT_DIR\n";
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  if (!in) {
    std::cerr << "cannot read " << argv[1] << "\n";
    return 1;
  }
  std::ostringstream corpus;
  corpus << in.rdbuf();
  absl::Status status = epinfer::TrainTokenizer(corpus.str(), vocab_size, argv[3]);
  if (!status.ok()) {
    std::cerr << status << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string command = argc > 1 ? argv[1] : "";
  if (command == "tokenize") return epinfer::RunTokenize(argc - 1, argv + 1);
  if (command == "detokenize") return epinfer::RunDetokenize(argc - 1, argv + 1);
  if (command == "chat") return RunChat(argc - 1, argv + 1);
  if (command == "train") return RunTrain(argc - 1, argv + 1);
  std::cerr << "usage: tokenizer_tool tokenize|detokenize|chat|train ...\n";
  return 2;
}
