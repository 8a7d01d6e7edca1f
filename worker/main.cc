#include "worker/comm/ucx.h"
#include "worker/worker_main.h"

int main(int argc, char** argv) {
  epinfer::PrepareUcxEnvironment();  // before any thread starts
  return epinfer::RunWorker(argc, argv);
}
