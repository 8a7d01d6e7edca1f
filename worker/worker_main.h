#ifndef EPINFER_WORKER_WORKER_MAIN_H_
#define EPINFER_WORKER_WORKER_MAIN_H_

namespace epinfer {

// One EP rank: epinfer.v1.Worker and /metrics. Both the `worker` binary and `epinfer worker`
// run this.
int RunWorker(int argc, char** argv);

}  // namespace epinfer

#endif  // EPINFER_WORKER_WORKER_MAIN_H_
