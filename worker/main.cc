#include "worker/worker_main.h"

int main(int argc, char** argv) { return epinfer::RunWorker(argc, argv); }
