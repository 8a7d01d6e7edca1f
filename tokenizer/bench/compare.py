#!/usr/bin/python3
"""Encode throughput of epinfer's tokenizer and of the JavaScript reference (@huggingface/
transformers under node) on the same ~10 MB mixed corpus, in one run, with DeepSeek-V3's
tokenizer.json. Prints one Markdown row for docs/PERFORMANCE.md.

  bazel run --config=bench //tokenizer/bench:compare [-- --corpus FILE] [-- --tokenizer DIR]

The corpus: Python's standard library sources from this machine's python3.11 (code, English
comments and docstrings; 5 MB), then text drawn (seeded) from the reference tests' multilingual
alphabet: English, CJK, Arabic, Hebrew, Devanagari, Cyrillic, emoji, combining marks, numbers,
whitespace runs and special tokens (5 MB)."""
import argparse
import datetime
import glob
import json
import os
import subprocess
import sys
import tempfile

RUNFILES = os.environ.get("RUNFILES_DIR") or (os.path.abspath(sys.argv[0]) + ".runfiles")


def runfile(path):
    return os.path.join(RUNFILES, "epinfer", path)


sys.path.insert(0, os.path.dirname(runfile("tests/tokenizer/corpus.py")))
import corpus  # noqa: E402

REFERENCE_DIR = os.path.dirname(os.path.realpath(runfile("tests/tokenizer/package.json")))
DEEPSEEK_V3 = os.path.join(REFERENCE_DIR, "node_modules", "@lenml", "tokenizer-deepseek_v3",
                           "models")
MB = 1_000_000


def make_corpus(path):
    parts, size = [], 0
    for name in sorted(glob.glob("/usr/lib/python3.11/*.py")):
        with open(name, encoding="utf-8", errors="replace") as f:
            text = f.read()
        parts.append(text)
        size += len(text.encode())
        if size >= 5 * MB:
            break
    seed = 0
    while size < 10 * MB:
        text = "\n".join(corpus.HANDWRITTEN + corpus.fuzz(500, seed=seed, max_length=400))
        parts.append(text)
        size += len(text.encode())
        seed += 1
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", help="text file to encode (default: the mixed corpus)")
    parser.add_argument("--tokenizer", default=DEEPSEEK_V3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    path = args.corpus
    if path is None:
        path = os.path.join(tempfile.mkdtemp(), "corpus.txt")
        make_corpus(path)
    ours = json.loads(subprocess.run(
        [runfile("tokenizer/bench/encode_bench"), args.tokenizer, path, str(args.repeats)],
        check=True, capture_output=True, text=True).stdout)
    request = {"tokenizer_dir": args.tokenizer, "time_encode_file": path,
               "repeats": args.repeats}
    theirs = json.loads(subprocess.run(
        ["node", os.path.join(REFERENCE_DIR, "reference.mjs")], input=json.dumps(request),
        check=True, capture_output=True, text=True).stdout)["time_encode"]
    if ours["tokens"] != theirs["tokens"]:
        sys.exit("token counts differ: epinfer %d, reference %d" % (ours["tokens"],
                                                                    theirs["tokens"]))
    ref_mb_s = theirs["bytes"] / theirs["seconds"] / MB
    print("corpus: %s (%.1f MB, %d tokens)" % (path, ours["bytes"] / MB, ours["tokens"]))
    print("epinfer:   %.2f MB/s (%.3f s, best of %d)" % (ours["mb_per_s"], ours["seconds"],
                                                         args.repeats))
    print("reference: %.2f MB/s (%.3f s, best of %d)" % (ref_mb_s, theirs["seconds"],
                                                         args.repeats))
    print("| Tokenizer encode, DeepSeek-V3 tokenizer.json, %.1f MB mixed corpus, 1 thread | "
          "%.2f MB/s | @huggingface/transformers (node %s): %.2f MB/s | %.1f× | "
          "`bazel run --config=bench //tokenizer/bench:compare` | %s |" % (
              ours["bytes"] / MB, ours["mb_per_s"],
              subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip(),
              ref_mb_s, ours["mb_per_s"] / ref_mb_s, datetime.date.today().isoformat()))


if __name__ == "__main__":
    main()
