#ifndef EPINFER_TOKENIZER_TOKENIZER_CLI_H_
#define EPINFER_TOKENIZER_TOKENIZER_CLI_H_

namespace epinfer {

// `epinfer tokenize --tokenizer PATH`: text on stdin, its ids as a JSON array on stdout.
// --json_lines: each stdin line is a JSON string; one JSON array (or {"error": ...}) per line.
int RunTokenize(int argc, char** argv);

// `epinfer detokenize --tokenizer PATH`: a JSON array of ids on stdin, the text on stdout.
// --json_lines: each line is a JSON array; one JSON string (or {"error": ...}) per line.
// --stream_pieces: print the JSON array of pieces that streaming detokenization emits instead.
int RunDetokenize(int argc, char** argv);

}  // namespace epinfer

#endif  // EPINFER_TOKENIZER_TOKENIZER_CLI_H_
