// The independent reference for epinfer's tokenizer tests: Hugging Face's JavaScript tokenizer
// (@huggingface/transformers, whose chat templates render with @huggingface/jinja), loading a
// local tokenizer.json + tokenizer_config.json with no network.
//
// stdin: {"tokenizer_dir": DIR, "encode": [text], "encode_without_added_tokens": [text],
//         "decode": [[id]], "decode_skip_special": [[id]],
//         "chat": [{"messages": [...], "add_generation_prompt": b, "continue_final_message": b,
//                   "chat_template": string|null}],
//         "time_encode_file": FILE (optional; seconds to encode it, best of "repeats")}
// stdout: the same keys with the reference's answers.
import { readFileSync } from "node:fs";
import { PreTrainedTokenizer } from "@huggingface/transformers";

const request = JSON.parse(readFileSync(0, "utf8"));
const dir = request.tokenizer_dir;
const tokenizerJson = JSON.parse(readFileSync(`${dir}/tokenizer.json`, "utf8"));
let config = {};
try {
  config = JSON.parse(readFileSync(`${dir}/tokenizer_config.json`, "utf8"));
} catch {}
const tokenizer = new PreTrainedTokenizer(tokenizerJson, config);
// The same tokenizer with no added tokens: what "special tokens off" means.
const plain = new PreTrainedTokenizer({ ...tokenizerJson, added_tokens: [] }, config);

const out = {};
const encode = (t, text) => t.encode(text, { add_special_tokens: false });
out.encode = (request.encode ?? []).map((text) => encode(tokenizer, text));
out.encode_without_added_tokens = (request.encode_without_added_tokens ?? []).map((text) =>
  encode(plain, text),
);
out.decode = (request.decode ?? []).map((ids) => tokenizer.decode(ids));
out.decode_skip_special = (request.decode_skip_special ?? []).map((ids) =>
  tokenizer.decode(ids, { skip_special_tokens: true }),
);
out.chat = (request.chat ?? []).map((c) => {
  const options = { add_generation_prompt: c.add_generation_prompt, tokenize: false };
  if (c.chat_template) options.chat_template = c.chat_template;
  let text = tokenizer.apply_chat_template(c.messages, options);
  if (c.continue_final_message) {
    // Hugging Face's continue_final_message: end the prompt right after the final message.
    const content = c.messages[c.messages.length - 1].content;
    const end = text.lastIndexOf(content);
    text = text.slice(0, end + content.length);
  }
  return { text, ids: encode(tokenizer, text) };
});
if (request.time_encode_file) {
  const text = readFileSync(request.time_encode_file, "utf8");
  let best = Infinity;
  let count = 0;
  for (let r = 0; r < (request.repeats ?? 1); ++r) {
    const start = process.hrtime.bigint();
    count = encode(tokenizer, text).length;
    best = Math.min(best, Number(process.hrtime.bigint() - start) / 1e9);
  }
  out.time_encode = { seconds: best, tokens: count, bytes: Buffer.byteLength(text, "utf8") };
}
process.stdout.write(JSON.stringify(out));
